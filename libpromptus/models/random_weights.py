"""`sd-turbo-random`: SD-Turbo's architecture with seeded random weights, built in memory.

The shipped SD 2.1 UNet config (`configs/sd_turbo_unet.json`) and TAESD config
(`configs/taesd.json`), initialised by diffusers' (torch's) default initialisation from
fixed seeds, float32 on the CPU. Nothing is read but the package and nothing is
downloaded, so CI runs SD-Turbo's whole path (the 865M-parameter UNet, 64-pixel blocks)
where its weights are absent, and the benchmarks measure its speed (which does not
depend on the weights).

The generator has SD-Turbo's profile: the streams it writes name model `sd-turbo` and
pin the random weights' identity (SPEC.md §7), so `--model sd-turbo-random` decodes them
and the real `sd-turbo` refuses them (another hash) unless forced. The weights depend
on the seeds, the configs and torch's and diffusers' initialisation code, not on the
process or its global random state: every process with the same torch and diffusers
builds them alike. The latent encoder is the encoder half of the same seeded TAESD
whose decoder the generator has, as in the real model.

Building the UNet takes some seconds on a CPU and 3.5 GB.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

from ..process.profiles import PROFILES
from .loading import ARCHITECTURES, Generator, _check_profile, _finish
from .locations import RANDOM_MODELS, TAESD_CONFIG, ModelNotFoundError

#: The seeds of the UNet's and of TAESD's initialisation (each its own, so the latent
#: encoder is built without the UNet).
UNET_SEED = 0
TAESD_SEED = 1


def load_random(name: str) -> Generator:
    """The generator of a registered random model (`sd-turbo-random`)."""
    profile = PROFILES[_profile_name(name)]
    config_file = ARCHITECTURES[profile.name]
    unet = seeded_module(UNet2DConditionModel, config_file, UNET_SEED)
    decoder = random_taesd(name)
    _check_profile(name, profile, unet, decoder, config_file)
    return Generator(name=profile.name, profile=profile, unet=unet, decoder=decoder,
                     source=f"{name}: random weights (seeds {UNET_SEED}/{TAESD_SEED}) in {profile.name}'s architecture")


def random_taesd(name: str = "sd-turbo-random") -> AutoencoderTiny:
    """The seeded TAESD of a random model: its decoder is the generator's, its encoder the
    latent encoder's."""
    _profile_name(name)
    return seeded_module(AutoencoderTiny, TAESD_CONFIG, TAESD_SEED)


def seeded_module(cls, config_file: Path, seed: int):
    """`cls` from a shipped config, default-initialised on the CPU from `seed` (the
    caller's random state is left as it was)."""
    config = {k: v for k, v in json.loads(config_file.read_text()).items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(seed)
        module = cls.from_config(config)
    # torch's own `to` (diffusers' adds a spurious warning); a no-op unless the default dtype is another
    return _finish(torch.nn.Module.to(module, dtype=torch.float32))


def _profile_name(name: str) -> str:
    if name not in RANDOM_MODELS:
        raise ModelNotFoundError(f"model {name} is not a random model (those are {', '.join(RANDOM_MODELS)})")
    return RANDOM_MODELS[name]
