"""The generators the speed benchmarks run: the shipped `tiny` model, or SD-Turbo's full
architecture with random weights (`sd-turbo-random`: the shipped SD 2.1 UNet and TAESD
configs, seeded initialisation). Speed does not depend on the weights, so the latter
measures SD-Turbo's speed on machines without its weights.
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

from libpromptus.models import Generator, load_generator
from libpromptus.models.loading import SD_TURBO_UNET_CONFIG, TAESD_CONFIG
from libpromptus.process.profiles import SD_TURBO

NAMES = ("tiny", "sd-turbo-random", "sd-turbo")


def benchmark_generator(name: str) -> Generator:
    """`tiny`, `sd-turbo` (real weights, when installed) or `sd-turbo-random`."""
    if name != "sd-turbo-random":
        return load_generator(name)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD_TURBO_UNET_CONFIG))
    decoder = AutoencoderTiny.from_config(AutoencoderTiny.load_config(TAESD_CONFIG))
    for module in (unet, decoder):
        module.eval().requires_grad_(False)
    return Generator("sd-turbo", SD_TURBO, unet, decoder, source="random weights (SD-Turbo architecture)")
