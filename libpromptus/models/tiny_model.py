"""The `tiny` model's definition and file layout: its configs, a builder and the writer.

`tiny` has the classes and conditioning of SD-Turbo (a `UNet2DConditionModel` taking a
77 x 1024 conditioning on a 4-channel latent, an `AutoencoderTiny` decoder with 8x
upsampling) at a few megabytes, so the whole codec can be tested on a CPU. Its weights
are trained by `python -m libpromptus.models.train_tiny`, which builds the networks
here and hands the trained weights to `write`.

The weights are stored as float16: the SPEC.md §7 identity is defined on binary16
values, so nothing that tells models apart is lost, the files are half the size, and a
float32 load (CPU) and a float16 copy (GPU) hold exactly the same values. The configs
are written from the fixed dictionaries below, not from diffusers' `save_pretrained`,
so that they do not change with the diffusers version.

The folder is a real diffusers layout (`unet/` and `vae/`, each `config.json` +
`diffusion_pytorch_model.safetensors`) plus `MANIFEST.json`: the SHA-256 of every file,
the model's §7 identity (which the loader checks) and the training recipe.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

NAME = "tiny"

#: The denoising network: SD-Turbo's classes and conditioning, two resolution levels
#: (one downsampling), one cross-attention block down and up, 16-dim attention heads.
#: Attention runs only at the lower resolution (and in the mid block): at 512x512 the
#: latent is 64x64, and self-attention over its 4096 positions would cost more than all
#: the rest of the network on a CPU.
UNET_CONFIG: dict = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": [2, 4],
    "block_out_channels": [32, 64],
    "center_input_sample": False,
    "class_embed_type": None,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 1024,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "num_attention_heads": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "resnet_time_scale_shift": "default",
    "sample_size": 8,
    "time_embedding_type": "positional",
    "transformer_layers_per_block": 1,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": True,
}

#: The latent decoder: TAESD's architecture (3 up/downsamplings, latent 4 channels) with
#: 16 channels and one block per level.
VAE_CONFIG: dict = {
    "_class_name": "AutoencoderTiny",
    "act_fn": "relu",
    "decoder_block_out_channels": [16, 16, 16, 16],
    "encoder_block_out_channels": [16, 16, 16, 16],
    "force_upcast": False,
    "in_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "num_decoder_blocks": [1, 1, 1, 1],
    "num_encoder_blocks": [1, 1, 1, 1],
    "out_channels": 3,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
    "upsample_fn": "nearest",
    "upsampling_scaling_factor": 2,
}

WEIGHTS = "diffusion_pytorch_model.safetensors"
FILES = ("unet/config.json", f"unet/{WEIGHTS}", "vae/config.json", f"vae/{WEIGHTS}")
DEFAULT_OUT = Path(__file__).resolve().parent / "tiny"


def build():
    """Freshly initialised (unet, vae) modules with the tiny configs (torch's default init)."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    def plain(config: dict) -> dict:
        return {k: v for k, v in config.items() if not k.startswith("_")}

    return UNet2DConditionModel.from_config(plain(UNET_CONFIG)), AutoencoderTiny.from_config(plain(VAE_CONFIG))


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()


def write(out: Path, states: dict[str, dict[str, torch.Tensor]], training: dict) -> dict:
    """Write the tiny model folder (float16 `states` {"unet": ..., "vae": ...}) into `out`; returns the manifest."""
    from safetensors.torch import save

    from .identity import tensors_identity

    contents = {
        "unet/config.json": _json_bytes(UNET_CONFIG),
        f"unet/{WEIGHTS}": save(states["unet"], metadata={"format": "pt"}),
        "vae/config.json": _json_bytes(VAE_CONFIG),
        f"vae/{WEIGHTS}": save(states["vae"], metadata={"format": "pt"}),
    }
    named = {f"unet.{n}": t for n, t in states["unet"].items()}
    named.update({f"vae.{n}": t for n, t in states["vae"].items() if n.startswith("decoder.")})
    manifest = {
        "name": NAME,
        "description": "libpromptus test model: SD-Turbo's classes and conditioning at toy size, "
                       "trained on procedural video",
        "generator": "python -m libpromptus.models.train_tiny",
        "training": training,
        "dtype": "float16",
        "files": {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()},
        "identity": tensors_identity(named).hex(),
    }
    contents["MANIFEST.json"] = _json_bytes(manifest)
    for rel, data in contents.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return manifest
