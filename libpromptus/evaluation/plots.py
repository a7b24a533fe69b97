"""PNG figures with matplotlib's Agg renderer (no display, no pyplot state).

`rd_figure`: one panel per metric, measured bitrate (every byte of the file) against the
clip's mean, one line per codec. `cdf_figure`: one panel per metric, the empirical CDF
of the per-frame values of every run (colour: codec, line style: bitrate).
"""
from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from .report import METRIC_TITLES

__all__ = ["cdf_figure", "rd_figure"]

_STYLES = ("-", "--", ":", "-.")


def _figure(panels: int):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * panels, 3.6), layout="constrained")
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _colours(codecs: Sequence[str]) -> dict[str, str]:
    return {codec: f"C{i}" for i, codec in enumerate(dict.fromkeys(codecs))}


def rd_figure(runs: Sequence[dict], metrics: Sequence[str], title: str) -> bytes:
    """Rate-quality curves as PNG bytes; `runs` are the summary's rows."""
    figure, axes = _figure(len(metrics))
    colours = _colours([r["codec"] for r in runs])
    for axis, metric in zip(axes, metrics):
        for codec, colour in colours.items():
            points = sorted((r["bitrate_bps"] / 1000, r["mean"][metric]) for r in runs
                            if r["codec"] == codec and r["mean"][metric] is not None)
            if points:
                axis.plot(*zip(*points), "o-", color=colour, label=codec)
        axis.set_xlabel("bitrate, kbit/s (whole file)")
        axis.set_ylabel(METRIC_TITLES[metric] + (" (lower is better)" if metric == "lpips" else ""))
        axis.grid(True, alpha=0.3)
    axes[0].legend()
    figure.suptitle(title)
    return _png(figure)


def cdf_figure(records: Sequence[dict], metrics: Sequence[str], title: str) -> bytes:
    """Per-frame quality CDFs as PNG bytes; `records` are the runs' records."""
    figure, axes = _figure(len(metrics))
    colours = _colours([r["codec"] for r in records])
    labels = list(dict.fromkeys(r["label"] for r in records))
    for axis, metric in zip(axes, metrics):
        for record in records:
            values = np.sort([f[metric] for f in record["frames"] if f[metric] is not None])
            if len(values):
                shares = np.arange(1, len(values) + 1) / len(values)
                axis.step(values, shares, where="post", color=colours[record["codec"]],
                          linestyle=_STYLES[labels.index(record["label"]) % len(_STYLES)],
                          label=f"{record['codec']} {record['label']}")
        axis.set_xlabel(METRIC_TITLES[metric] + " per frame")
        axis.set_ylabel("share of frames")
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(title)
    return _png(figure)
