"""The model identity hash of SPEC.md §7.

```
model_hash = SHA-256( for each tensor, in ascending byte order of its name:
                        name (UTF-8) || 0x00 || ndim as le(8) || each dim as le(32) ||
                        every value, row-major, rounded to binary16, little-endian )
```

over the denoising network's state dict (names prefixed `unet.`) and the latent
decoder's (`vae.`, only the names starting with `vae.decoder.`). The hash depends on
the values rounded to binary16 only, so fp32 and fp16 copies of the same weights (the
fp16 copy being the rounding of the fp32 one), on any device, hash the same.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import numpy as np
import torch

#: Values converted and hashed per step: bounds the temporary binary16 copy (32 MiB).
CHUNK_VALUES = 1 << 24

UNET_PREFIX = "unet."
VAE_PREFIX = "vae."
DECODER_PREFIX = "vae.decoder."


def identity_tensors(unet: torch.nn.Module, decoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The tensors of §7 by their identity names (`unet.*`, `vae.decoder.*`)."""
    tensors = {UNET_PREFIX + name: t for name, t in unet.state_dict().items()}
    for name, t in decoder.state_dict().items():
        full = VAE_PREFIX + name
        if full.startswith(DECODER_PREFIX):
            tensors[full] = t
    return tensors


def model_identity(unet: torch.nn.Module, decoder: torch.nn.Module) -> bytes:
    """SPEC.md §7 identity (32 bytes) of a UNet2DConditionModel and an AutoencoderTiny."""
    return tensors_identity(identity_tensors(unet, decoder))


def tensors_identity(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """SHA-256 of §7 over named tensors (names already prefixed `unet.` / `vae.`)."""
    digest = hashlib.sha256()
    for name in sorted(tensors, key=lambda n: n.encode("utf-8")):
        _hash_tensor(digest, name, tensors[name])
    return digest.digest()


def _hash_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    tensor = tensor.detach()
    if tensor.ndim > 255:
        raise ValueError(f"tensor {name} has {tensor.ndim} dimensions (at most 255)")
    if any(d >= 1 << 32 for d in tensor.shape):
        raise ValueError(f"tensor {name} has a dimension of 2^32 or more")
    digest.update(name.encode("utf-8") + b"\x00" + bytes((tensor.ndim,))
                  + struct.pack(f"<{tensor.ndim}I", *tensor.shape))
    for chunk in _binary16_chunks(tensor):
        digest.update(chunk)


def _binary16_chunks(tensor: torch.Tensor) -> Iterable[memoryview]:
    """The tensor's values, row-major, rounded to binary16, as little-endian bytes."""
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), CHUNK_VALUES):
        part = flat[start:start + CHUNK_VALUES]
        if part.is_complex():
            raise ValueError("complex tensors have no §7 identity")
        if part.dtype in (torch.float32, torch.float16, torch.bfloat16):
            # round to nearest even, once (bfloat16 widens exactly to float32 first);
            # on the tensor's device, so only binary16 crosses to the host
            half = part.to(torch.float16).cpu().numpy()
        else:
            # float64 (torch would narrow it through float32: two roundings) and
            # integers: numpy rounds float64 to binary16 once
            half = part.cpu().numpy().astype(np.float64).astype(np.float16)
        yield memoryview(np.ascontiguousarray(half, dtype="<f2")).cast("B")
