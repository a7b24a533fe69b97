"""The two graphs every engine runs, as plain `nn.Module`s: what gets compiled or exported.

`DenoisingStep` is the network plus SPEC.md §8.6's denoising formula (input latent and
prompt in, generated latent x0 out); `LatentDecoder` is the latent decoder (x0 in, image
in [-1, 1] out). The compiled engine compiles them, the ONNX export traces them, and the
PyTorch engine's `forward` is their composition, so every engine computes one function.
"""
from __future__ import annotations

import torch

from ..bitstream import PredictionType, SequenceHeader
from ..process.denoise import denoised_latent


class DenoisingStep(torch.nn.Module):
    """`(z [B, C, h, w], c [B, T, D]) -> x0 [B, C, h, w]` at the header's timestep.

    `z` and `c` are float32; the network runs in its own precision, the formula in float32
    on the unrounded `z`, as SPEC.md §8.6 computes it.
    """

    def __init__(self, unet: torch.nn.Module, header: SequenceHeader) -> None:
        super().__init__()
        self.unet = unet
        self.timestep = int(header.timestep)
        self.alpha_bar = float(header.alpha_bar)
        self.prediction_type = PredictionType(header.prediction_type)

    def forward(self, latents: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        dtype = self.unet.dtype
        timestep = torch.full((latents.shape[0],), self.timestep, device=latents.device, dtype=torch.long)
        out = self.unet(latents.to(dtype), timestep, encoder_hidden_states=prompts.to(dtype)).sample
        return denoised_latent(latents, out.float(), self.alpha_bar, self.prediction_type)


class LatentDecoder(torch.nn.Module):
    """`x0 [B, C, h, w]` (float32) `-> image [B, 3, H, W]` (float32, nominally [-1, 1]):
    TAESD or the tiny model's decoder, run in its own precision."""

    def __init__(self, decoder: torch.nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decoder.decode(latents.to(self.decoder.dtype)).sample.float()
