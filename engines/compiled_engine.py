"""The compiled engine: the PyTorch engine's graphs through `torch.compile` (inductor).

On CUDA, `mode="reduce-overhead"` captures each (batch bucket, resolution) as a CUDA
graph, so a batch costs one graph launch instead of hundreds of kernel launches; on the
CPU inductor generates C++ kernels (useful for testing the path; the eager engine is as
fast there). Shapes are static: batches are padded to `buckets.bucket(B)` so that only a
few graphs are compiled per resolution. Compilation happens on the first batch of each
shape (the warm-up) and is cached on disk by inductor's FX graph cache, so a later
process reuses it. Outputs are copied out of the graphs' static buffers before return.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..bitstream import SequenceHeader
from .buckets import bucket, pad_batch
from .torch_engine import TorchEngine

if TYPE_CHECKING:
    from ..models import Generator


class CompiledEngine(TorchEngine):
    """`TorchEngine` with its denoising step and latent decoder compiled per static shape."""

    name = "compiled"

    def __init__(self, generator: "Generator", header: SequenceHeader, *, device: str = "auto",
                 precision: str = "auto") -> None:
        super().__init__(generator, header, device=device, precision=precision)
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self._compiled_step = torch.compile(self.step, mode=mode, fullgraph=True, dynamic=False)
        self._compiled_decoder = torch.compile(self.latent_decoder, mode=mode, fullgraph=True, dynamic=False)

    def forward(self, latents: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = latents.shape[0]
        size = bucket(count)
        z = pad_batch(latents.to(self.device, torch.float32), size)
        c = pad_batch(prompts.to(self.device, torch.float32), size)
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        x0 = self._compiled_step(z, c)
        image = self._compiled_decoder(x0)
        return x0[:count].clone(), image[:count].clone()
