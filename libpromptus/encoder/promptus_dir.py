"""Import an official Promptus prompt directory (`frame_*.prompt` + `init.pth`).

The official implementation saves each keyframe's quantized factors as a PyTorch zip
pickle (NUMERICS.md, "Prompt files"). They are loaded with
`torch.load(weights_only=True)`, which refuses anything but plain tensors and containers,
so a hostile file cannot run code; torch is imported only here. The factors go into the
stream bit-exact; the first-frame latent is stored losslessly (f32) unless a lossy latent
codec is asked for.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .. import __version__
from ..bitstream import Coding, Keyframe, LatentCodec, Metadata, StreamWriter
from ..errors import PromptDirectoryError
from ..process.profiles import SD_TURBO
from ..process.quantization import scene_start

_KEYFRAME_FILE = re.compile(r"frame_(\d+)\.prompt\Z")
_MAX_FILE_BYTES = 64 << 20


@dataclass(frozen=True)
class ImportedKeyframe:
    frame_index: int
    u: np.ndarray
    v: np.ndarray
    u_scale: float
    u_zero_point: int
    v_scale: float
    v_zero_point: int


def _load(path: Path):
    import pickle

    import torch

    if path.stat().st_size > _MAX_FILE_BYTES:
        raise PromptDirectoryError(f"{path.name}: larger than {_MAX_FILE_BYTES >> 20} MiB")
    try:
        # torch warns on stderr about some hostile pickles (e.g. an unexpected protocol)
        # before refusing them; the refusal below is the one message the user gets.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise PromptDirectoryError(f"{path.name}: refused: holds objects other than plain tensors") from None
    except Exception as err:  # torch raises RuntimeError, zipfile/EOF errors for damaged files
        raise PromptDirectoryError(f"{path.name}: not a readable PyTorch file ({type(err).__name__})") from None


def _scalar(value, name: str, path: Path) -> float:
    import torch

    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.dtype.is_floating_point:
        raise PromptDirectoryError(f"{path.name}: {name} is not a single float")
    return float(value.reshape(()).to(torch.float32))


def _factor(value, name: str, shape: tuple[int | None, int | None], path: Path) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or value.dim() != 2 or any(
            want is not None and got != want for want, got in zip(shape, value.shape)):
        raise PromptDirectoryError(f"{path.name}: {name} is not a uint8 matrix of shape {shape}")
    return value.numpy().copy()


def read_keyframe(path: Path, frame_index: int) -> ImportedKeyframe:
    """Read and check one official `frame_NNNNN.prompt` file."""
    data = _load(path)
    if not isinstance(data, dict) or not {"U", "V", "U_scale", "V_scale", "U_zero_point", "V_zero_point"} <= set(data):
        raise PromptDirectoryError(f"{path.name}: not a Promptus prompt (needs U, V, scales and zero points)")
    u = _factor(data["U"], "U", (SD_TURBO.cond_tokens, None), path)
    v = _factor(data["V"], "V", (u.shape[1], SD_TURBO.cond_dim), path)
    zeros = []
    for name in ("U_zero_point", "V_zero_point"):
        zero = _scalar(data[name], name, path)
        if zero != round(zero) or not 0 <= zero <= 255:
            raise PromptDirectoryError(f"{path.name}: {name} {zero} is not an integer in 0..255")
        zeros.append(int(zero))
    return ImportedKeyframe(frame_index, u, v, _scalar(data["U_scale"], "U_scale", path), zeros[0],
                            _scalar(data["V_scale"], "V_scale", path), zeros[1])


def read_init_latent(path: Path) -> np.ndarray:
    """Read `init.pth`: the scaled SD VAE latent of frame 0, float32 [4, H/8, W/8]."""
    import torch

    data = _load(path)
    if not isinstance(data, torch.Tensor) or not data.dtype.is_floating_point:
        raise PromptDirectoryError(f"{path.name}: not a float tensor")
    latent = data.to(torch.float32).numpy()
    if latent.ndim == 4 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.ndim != 3 or latent.shape[0] != SD_TURBO.latent_channels:
        raise PromptDirectoryError(f"{path.name}: shape {tuple(data.shape)} is not [1, 4, H/8, W/8]")
    if not np.isfinite(latent).all():
        raise PromptDirectoryError(f"{path.name}: holds NaN or infinity")
    return latent


def list_keyframes(directory: Path) -> list[tuple[int, Path]]:
    """The directory's keyframe files as (display frame index, path), in frame order."""
    if not directory.is_dir():
        raise PromptDirectoryError(f"{directory}: not a directory")
    found = sorted((int(m.group(1)), p) for p in directory.iterdir() if (m := _KEYFRAME_FILE.match(p.name)))
    if not found:
        raise PromptDirectoryError(f"{directory}: no frame_*.prompt files")
    if found[0][0] != 0:
        raise PromptDirectoryError(f"{directory}: the first keyframe is frame {found[0][0]}, not 0")
    return found


def import_promptus_dir(directory: str | Path, sink: BinaryIO, *, fps: tuple[int, int] = (30, 1),
                        latent_codec: LatentCodec = LatentCodec.F32, coding: Coding = Coding.ENTROPY) -> int:
    """Write the `.pmt` stream of an official prompt directory to `sink`; return its size.

    The model identity is SD-Turbo's registered name; its weight hash is left unpinned
    (all zero, SPEC.md "Model identity") because the official files do not record it.
    """
    directory = Path(directory)
    keyframes = list_keyframes(directory)
    latent = read_init_latent(directory / "init.pth")
    channels, height, width = latent.shape
    d = SD_TURBO.latent_downsampling
    header = SD_TURBO.sequence_header(width=width * d, height=height * d, fps_num=fps[0], fps_den=fps[1],
                                      frame_count=keyframes[-1][0] + 1)
    with StreamWriter(sink, header) as writer:
        writer.write(Metadata((("encoder", f"libpromptus {__version__}"),
                               ("source", "promptus-dir"),
                               ("settings", f"latent_codec={latent_codec.name.lower()} coding={coding.name.lower()}"))))
        writer.write(scene_start(0, latent, latent_codec, coding))
        for frame_index, path in keyframes:
            k = read_keyframe(path, frame_index)
            writer.write(Keyframe(frame_index, coding, k.u, k.v, k.u_scale, k.u_zero_point, k.v_scale, k.v_zero_point))
    return writer.size
