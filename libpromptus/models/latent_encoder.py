"""Latent encoders: a scene's first frame to its first-frame latent (SPEC.md §5.2).

Two kinds, as in the official code and its faster alternative:
- `vae`: the SD VAE encoder (diffusers `AutoencoderKL`, the `vae/` folder of an
  sd-turbo snapshot); the latent is the mean of its distribution times the VAE's
  `scaling_factor` (0.18215 for SD 2.x), what the official `init.pth` holds;
- `taesd`: TAESD's encoder (`AutoencoderTiny`), which approximates the scaled latent
  directly, much faster.
`sd-turbo` uses `vae` by default; `tiny` has only its own AutoencoderTiny (`taesd`), and
`sd-turbo-random` only the encoder half of its seeded random TAESD (`random_weights`).
Like the generators, they load offline only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from .loading import MANIFEST, _from_pretrained, load_decoder, verify_manifest
from .locations import (
    RANDOM_MODELS,
    SD_TURBO_REPO,
    TINY_DIR,
    ModelNotFoundError,
    config_class,
    decoder_in,
    find_taesd,
    hf_snapshots,
    model_dir,
    resolve_model,
)
from .random_weights import random_taesd

ENCODER_KINDS = ("vae", "taesd")
DEFAULT_KIND = {"sd-turbo": "vae", "sd-turbo-random": "taesd", "tiny": "taesd"}


@dataclass
class LatentEncoder:
    """Encodes RGB frames into the generator's (scaled) latent space."""

    kind: str
    module: AutoencoderKL | AutoencoderTiny
    scaling_factor: float

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] frames (H, W multiples of 8) -> float32 [B, C, H/8, W/8] latents."""
        parameter = next(self.module.parameters())
        x = images.to(parameter.device).permute(0, 3, 1, 2).to(parameter.dtype) / 127.5 - 1.0
        if self.kind == "vae":
            latent = self.module.encode(x).latent_dist.mean * self.scaling_factor
        else:
            latent = self.module.encode(x).latents
        return latent.float()


def load_latent_encoder(spec: str | Path | None = None, kind: str | None = None) -> LatentEncoder:
    """The latent encoder of a model (`spec` as for `load_generator`); `kind` vae or taesd."""
    target = resolve_model(spec)
    name = target if isinstance(target, str) else None
    if name is None:
        manifest = verify_manifest(target) if target.is_dir() and (target / MANIFEST).exists() else None
        name = manifest.get("name") if manifest else "sd-turbo"
    kind = kind or DEFAULT_KIND.get(name, "vae")
    if kind not in ENCODER_KINDS:
        raise ValueError(f"latent encoder {kind!r}: choose vae or taesd")
    if name in RANDOM_MODELS:
        if kind != "taesd":
            raise ModelNotFoundError(f"model {name} has no SD VAE: its latent encoder is its random TAESD's (taesd)")
        return LatentEncoder("taesd", random_taesd(name), 1.0)
    if name == "tiny":
        if kind != "taesd":
            raise ModelNotFoundError("model tiny has no SD VAE: its latent encoder is its own AutoencoderTiny (taesd)")
        return _taesd(TINY_DIR / "vae")
    folders = [target] if isinstance(target, Path) else [model_dir() / "sd-turbo", *hf_snapshots(SD_TURBO_REPO)]
    if kind == "taesd":
        found = next((d for d in map(decoder_in, folders) if d is not None), None) or find_taesd()
        if found is None:
            raise ModelNotFoundError(f"TAESD for {name} not found: download madebyollin/taesd once "
                                     f"(huggingface-cli download madebyollin/taesd) or put it in {model_dir() / 'taesd'}")
        return _taesd(found)
    for folder in folders:
        if config_class(folder / "vae") == "AutoencoderKL":
            vae = _from_pretrained(AutoencoderKL, folder / "vae")
            return LatentEncoder("vae", vae, float(vae.config.scaling_factor))
    raise ModelNotFoundError(f"the SD VAE of {name} was not found: download it once (huggingface-cli download "
                             f"{SD_TURBO_REPO} --include 'vae/*') or put a diffusers vae/ folder in "
                             f"{model_dir() / 'sd-turbo'}; or use the taesd latent encoder")


def _taesd(folder: Path) -> LatentEncoder:
    module = load_decoder(folder)
    return LatentEncoder("taesd", module, 1.0)
