"""The engine interface and the factory that picks an engine by name."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import EngineUnavailableError

if TYPE_CHECKING:
    import torch

    from ..bitstream import SequenceHeader
    from ..models import Generator

ENGINE_NAMES = ("auto", "torch", "compiled", "tensorrt")
#: Frames generated per engine call: one interval of the official receiver (10 frames).
DEFAULT_BATCH = 10


@dataclass(frozen=True)
class Generation:
    """What an engine returns for a batch of B frames."""

    latents: "torch.Tensor"   # float32 [B, C, h, w]: the generated latents x0 (SPEC.md §8.6)
    images: "torch.Tensor"    # uint8 [B, coded_height, coded_width, 3] on the CPU


class Engine(Protocol):
    """Generates frames: `generate(z [B, C, h, w], c [B, T, D]) -> Generation`.

    `z` and `c` are float32 on any device; the engine casts them to its own device and
    precision and returns float32 latents and uint8 images. `forward` is the same
    computation before the pixels are rounded, differentiable in `c`: the encoder fits
    prompts through it. An engine that only runs inference (TensorRT) raises
    `EngineUnavailableError` from `forward`.
    """

    name: str
    device: "torch.device"

    def generate(self, latents: "torch.Tensor", prompts: "torch.Tensor") -> Generation: ...

    def forward(self, latents: "torch.Tensor",
                prompts: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor"]:
        """(x0 float32 [B, C, h, w], image float32 in [-1, 1] [B, 3, H, W]), with gradients."""
        ...


def create_engine(name: str, generator: "Generator", header: "SequenceHeader", *, device: str = "auto",
                  precision: str = "auto") -> Engine:
    """Build the engine called `name`.

    "auto" picks the fastest engine that can run here: TensorRT on CUDA when it is
    installed, else the compiled engine on CUDA, else the PyTorch engine (on the CPU the
    eager engine is as fast as the compiled one and starts at once).
    """
    if name == "auto":
        name = _fastest_available(device)
    if name == "torch":
        from .torch_engine import TorchEngine

        return TorchEngine(generator, header, device=device, precision=precision)
    if name == "compiled":
        from .compiled_engine import CompiledEngine

        return CompiledEngine(generator, header, device=device, precision=precision)
    if name == "tensorrt":
        from .tensorrt_engine import TensorRTEngine

        return TensorRTEngine(generator, header, device=device, precision=precision)
    raise EngineUnavailableError(f"unknown engine {name!r}; choose one of {', '.join(ENGINE_NAMES)}")


def _fastest_available(device: str) -> str:
    import importlib.util

    from .torch_engine import pick_device

    if pick_device(device).type != "cuda":
        return "torch"
    return "tensorrt" if importlib.util.find_spec("tensorrt") is not None else "compiled"
