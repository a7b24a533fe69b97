"""The PyTorch engine: eager diffusers modules on the CPU (fp32) or CUDA (fp16/bf16).

On CUDA it runs in half precision with channels_last memory layout and PyTorch's
scaled-dot-product attention (diffusers' default attention processor), under
`torch.inference_mode`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..bitstream import SequenceHeader
from ..process.denoise import to_uint8
from .base import Generation
from .graphs import DenoisingStep, LatentDecoder

if TYPE_CHECKING:
    from ..models import Generator

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_device(device: str) -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    picked = torch.device(device)
    if picked.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device}: CUDA is not available on this machine")
    return picked


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on CUDA (as the official TensorRT receiver) and fp32 on the CPU."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: choose auto, fp32, fp16 or bf16")
    return PRECISIONS[precision]


def _placed(module: torch.nn.Module, device: torch.device, dtype: torch.dtype,
            memory_format: torch.memory_format) -> torch.nn.Module:
    """Move a module to the engine's device and precision (casting only when needed:
    diffusers warns on every dtype cast)."""
    module = module.to(device, memory_format=memory_format)
    return module if module.dtype == dtype else module.to(dtype)


class TorchEngine:
    """Runs the generator's UNet and latent decoder with PyTorch."""

    name = "torch"

    def __init__(self, generator: "Generator", header: SequenceHeader, *, device: str = "auto",
                 precision: str = "auto") -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        self.step = DenoisingStep(_placed(generator.unet, self.device, self.dtype, memory_format), header)
        self.latent_decoder = LatentDecoder(_placed(generator.decoder, self.device, self.dtype, memory_format))

    def forward(self, latents: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable generation: (x0 float32 [B, C, h, w], image float32 in [-1, 1] [B, 3, H, W]).

        The encoder fits prompts through this with autograd (the network's own weights
        are frozen); `generate` runs it under inference mode for decoding.
        """
        x0 = self.step(latents.to(self.device, torch.float32), prompts.to(self.device, torch.float32))
        return x0, self.latent_decoder(x0)

    @torch.inference_mode()
    def generate(self, latents: torch.Tensor, prompts: torch.Tensor) -> Generation:
        x0, image = self.forward(latents, prompts)
        pixels = to_uint8(image).permute(0, 2, 3, 1).contiguous().cpu()
        return Generation(latents=x0, images=pixels)
