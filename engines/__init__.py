"""Inference engines: run the generator for a batch of input latents and prompts.

An engine is the only place that touches the denoising network and the latent decoder
at decode time, so faster back ends (compiled CUDA graphs, TensorRT) slot in behind the
same small interface (`Engine`, `create_engine`).
"""
from .base import DEFAULT_BATCH, ENGINE_NAMES, Engine, EngineUnavailableError, Generation, create_engine

__all__ = ["DEFAULT_BATCH", "ENGINE_NAMES", "Engine", "EngineUnavailableError", "Generation", "create_engine"]
