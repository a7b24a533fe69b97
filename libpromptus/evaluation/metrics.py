"""Per-frame quality: PSNR, SSIM, MS-SSIM and LPIPS of decoded frames against the source.

- PSNR: over the three RGB channels of uint8 frames, ``10·log10(255² / MSE)`` in float64,
  `math.inf` for identical frames. A clip's mean PSNR is the mean of its frames' PSNRs.
- SSIM: `pytorch_msssim.ssim` (Gaussian window 11, σ 1.5, the usual K1/K2) on the RGB
  channels with data range 255, averaged over channels; needs both sides >= 11.
- MS-SSIM: `pytorch_msssim.ms_ssim`, five scales, same window; defined only when the
  shorter side is >= 161 px (`MS_SSIM_MIN_SIDE`): smaller clips get no MS-SSIM.
- LPIPS (AlexNet, v0.1): `libpromptus.encoder.losses.LPIPSLoss`, the `lpips` package with its
  backbone read from the local torch hub cache (never downloaded). When it cannot be
  built, only LPIPS is missing: `Metrics.lpips_error` says why and the other metrics are
  still computed.

"Severely distorted" frames follow the Promptus paper: LPIPS > 0.32. Without LPIPS a
labelled proxy is used, PSNR below a threshold (`SevereRule`).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..encoder.losses import MS_SSIM_MIN_SIDE, SSIM_WINDOW

__all__ = ["LPIPS_SEVERE", "METRICS", "Metrics", "SevereRule", "mean_metrics", "ms_ssim", "psnr", "ssim"]

from ..process import quality

log = logging.getLogger("libpromptus")

METRICS = ("psnr", "ssim", "ms_ssim", "lpips")   # in report order
LPIPS_SEVERE = 0.32                               # the paper's "severely distorted" threshold
_BATCH = 8                                        # frames per SSIM/LPIPS batch


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of two uint8 RGB frames of one shape; `math.inf` when they are equal."""
    _check_pair(reference, decoded)
    return quality.psnr(reference, decoded)


def _check_pair(reference: np.ndarray, decoded: np.ndarray) -> None:
    if reference.shape != decoded.shape or reference.ndim != 3 or reference.shape[2] != 3:
        raise ValueError(f"frames of different shapes: {reference.shape} and {decoded.shape}")


def _tensor(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float64 [B, 3, H, W] in 0..255."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(torch.float64)


def ssim(reference: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> list[float]:
    """SSIM of each pair of uint8 RGB frames (1.0 for equal frames)."""
    return _structural("ssim", SSIM_WINDOW, "SSIM", reference, decoded)


def ms_ssim(reference: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> list[float]:
    """Five-scale MS-SSIM of each pair of uint8 RGB frames (shorter side >= 161 px)."""
    return _structural("ms_ssim", MS_SSIM_MIN_SIDE, "MS-SSIM", reference, decoded)


def _structural(function: str, min_side: int, name: str, reference: Sequence[np.ndarray],
                decoded: Sequence[np.ndarray]) -> list[float]:
    """`pytorch_msssim.<function>` per frame pair, window 11, data range 255."""
    import pytorch_msssim

    if min(reference[0].shape[:2]) < min_side:
        raise ValueError(f"{name} needs frames of at least {min_side}x{min_side}")
    values = getattr(pytorch_msssim, function)(_tensor(reference), _tensor(decoded), data_range=255.0,
                                               size_average=False, win_size=SSIM_WINDOW)
    return [float(v) for v in values]


@dataclass(frozen=True)
class SevereRule:
    """Which frames count as severely distorted: LPIPS > 0.32, or PSNR < `psnr_below` without LPIPS."""

    lpips: bool
    psnr_below: float = 20.0

    @property
    def label(self) -> str:
        if self.lpips:
            return f"LPIPS > {LPIPS_SEVERE}"
        return f"PSNR < {self.psnr_below:g} dB (proxy: LPIPS unavailable)"

    def is_severe(self, frame: dict) -> bool:
        if self.lpips:
            return frame["lpips"] > LPIPS_SEVERE
        return frame["psnr"] is not None and frame["psnr"] < self.psnr_below

    def share(self, frames: Sequence[dict]) -> float:
        """The fraction of `frames` (per-frame metric dicts) that are severely distorted."""
        return sum(self.is_severe(f) for f in frames) / len(frames)


class Metrics:
    """The metrics that can be computed here, for frames of one size.

    `names` lists them in `METRICS` order; `lpips_error` is why LPIPS is missing (None
    when present); `notes` has one line per metric left out.
    """

    def __init__(self, width: int, height: int) -> None:
        self.names = ["psnr", "ssim"]
        self.notes: dict[str, str] = {}
        if min(width, height) >= MS_SSIM_MIN_SIDE:
            self.names.append("ms_ssim")
        else:
            self.notes["ms_ssim"] = f"MS-SSIM needs frames of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE}"
        self._lpips = None
        self.lpips_error: str | None = None
        try:
            from ..encoder.losses import LPIPSLoss

            self._lpips = LPIPSLoss("alex")
            self.names.append("lpips")
        except ValueError as error:
            self.lpips_error = str(error)
            self.notes["lpips"] = f"LPIPS unavailable: {error}"

    def measure(self, reference: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> list[dict]:
        """Per-frame metrics, one dict per frame ({"psnr": dB or None for infinite, "ssim": ...})."""
        if len(reference) != len(decoded):
            raise ValueError(f"{len(decoded)} decoded frames for {len(reference)} source frames")
        out: list[dict] = []
        for start in range(0, len(reference), _BATCH):
            ref, dec = list(reference[start:start + _BATCH]), list(decoded[start:start + _BATCH])
            columns = {"psnr": [_finite_or_none(psnr(a, b)) for a, b in zip(ref, dec)], "ssim": ssim(ref, dec)}
            if "ms_ssim" in self.names:
                columns["ms_ssim"] = ms_ssim(ref, dec)
            if self._lpips is not None:
                with torch.no_grad():
                    x = _tensor(dec).float() / 127.5 - 1.0
                    y = _tensor(ref).float() / 127.5 - 1.0
                    columns["lpips"] = [float(v) for v in self._lpips(x, y)]
            out += [{name: columns[name][i] for name in self.names} for i in range(len(ref))]
        return out


def _finite_or_none(value: float) -> float | None:
    """JSON has no infinity: an infinite PSNR (identical frames) is stored as None."""
    return value if math.isfinite(value) else None


def mean_metrics(frames: Sequence[dict]) -> dict:
    """The mean of each metric over frames; a mean PSNR is None (infinite) if any frame's is."""
    means = {}
    for name in frames[0]:
        values = [f[name] for f in frames]
        means[name] = None if any(v is None for v in values) else float(np.mean(values))
    return means
