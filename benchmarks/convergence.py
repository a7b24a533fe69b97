"""Convergence: the PSNR a keyframe reaches against its iteration budget, tiny model.

    python benchmarks/convergence.py [--budgets 10,30,100,300] [--frames 13] [--size 128]
                                     [--patience 10,20,40] [--cap 1000]
                                     [--out FILE.json]   (the curves go beside it as FILE.png)

Groundwork for issue 18 item 4: the budget the tiny model's defaults (300 for a scene's
first keyframe, 100 for the others) should be, read off curves. Clips: held-out
procedural clips (`libpromptus.models.procedural`, seeds from `HELD_OUT_SEED`, never
seen in training) and, when ../shared/reference/promptus-official is present, the
official sky and uvg frames, all at `--size`² (`-s`). Each clip is encoded once per
budget B (`--iterations B --first-iterations B`, `-g 4`, rank 4, no scene detection),
with and without `--warm-start`; from `--stats`, the first keyframe's PSNR and the mean
PSNR of the later keyframes' frames (what pmtdec shows). Later keyframes start from the
first keyframe's result, so their curve is the whole chain's at that budget. `seconds`
is the encode's wall time.

Early stopping: each clip is also encoded with `--patience P` for each P of `--patience`,
the budget raised to `--cap` for both kinds of keyframe, without warm start; the record
has the PSNRs, the wall time and the iterations each kind of keyframe actually took, and
the plot marks them on the curves at those iterations. With `--defaults`, each clip is
also encoded at the model's default budgets (300 / 100 for tiny), once with its default
`--patience` and once with 0 (off): what the default early stopping saves.
"""
from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from environment import environment, report

from libpromptus import encode
from libpromptus.io.samples import write_y4m
from libpromptus.models.procedural import random_clip
from libpromptus.models.train_tiny import HELD_OUT_SEED
from libpromptus.process.profiles import TINY

OFFICIAL = Path(__file__).resolve().parents[2] / "shared" / "reference" / "promptus-official"


def clips(folder: Path, frames: int, size: int) -> dict[str, str]:
    """Name -> input: held-out procedural clips written as y4m, and the official frame sequences."""
    found = {}
    for seed in (HELD_OUT_SEED + 10, HELD_OUT_SEED + 11):
        path = folder / f"procedural-{seed}.y4m"
        write_y4m(str(path), random_clip(seed, frames, size, size, min_scene=frames)[0], 30)
        found[f"procedural-{seed}"] = str(path)
    for name in ("sky", "uvg"):
        if (OFFICIAL / name / "frames" / "00000.png").exists():
            found[f"official-{name}"] = str(OFFICIAL / name / "frames" / "%05d.png")
    return found


def run(source: str, out: Path, budget: int | None, warm: bool, frames: int, size: int,
        patience: int | None = 0) -> dict:
    """One encode at `budget` iterations per keyframe (None: the model's default budgets);
    `patience` 0 fits the whole budget, None is the model's default."""
    stats = io.StringIO()
    began = time.perf_counter()
    encode(source, str(out), overwrite=True, model="tiny", rank=4, interval=4, iterations=budget,
           first_iterations=budget, scene_threshold=None, warm_start=warm, max_frames=frames, size=(size, size),
           patience=patience, stats=stats)
    seconds = time.perf_counter() - began
    records = [json.loads(line) for line in stats.getvalue().splitlines()]
    first, later = records[0], records[1:]
    return {"budget": budget, "warm_start": warm, "patience": TINY.patience if patience is None else patience,
            "defaults": budget is None, "seconds": round(seconds, 2),
            "first_keyframe_psnr": round(first["psnr"][0], 3),
            "later_psnr": round(float(np.mean([p for r in later for p in r["psnr"]])), 3),
            "first_keyframe_iterations": first["iterations"],
            "later_iterations": round(float(np.mean([r["iterations"] for r in later])), 1)}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for name, runs in results.items():
        for warm, style in ((False, "-"), (True, "--")):
            points = [r for r in runs if r["warm_start"] == warm and not r["patience"] and not r["defaults"]]
            budgets = [r["budget"] for r in points]
            label = f"{name}{' warm' if warm else ''}"
            line, = axes[0].plot(budgets, [r["first_keyframe_psnr"] for r in points], style, marker="o", label=label)
            axes[1].plot(budgets, [r["later_psnr"] for r in points], style, marker="o", label=label,
                         color=line.get_color())
            stopped = [r for r in runs if r["warm_start"] == warm and r["patience"] and not r["defaults"]]
            axes[0].scatter([r["first_keyframe_iterations"] for r in stopped],
                            [r["first_keyframe_psnr"] for r in stopped], marker="x", color=line.get_color())
            axes[1].scatter([r["later_iterations"] for r in stopped], [r["later_psnr"] for r in stopped],
                            marker="x", color=line.get_color())
    for axis, title in zip(axes, ("a scene's first keyframe", "later keyframes (mean over their frames)")):
        axis.set_xscale("log")
        axis.set_xlabel("iterations per keyframe")
        axis.set_ylabel("PSNR (dB)")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    axes[1].legend(fontsize=7, title="x: --patience, at the iterations taken", title_fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="10,30,100,300")
    parser.add_argument("--frames", type=int, default=13)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--patience", default="", help="comma-separated --patience values to run at --cap")
    parser.add_argument("--cap", type=int, default=1000, help="the iteration budget of the --patience runs")
    parser.add_argument("--defaults", action="store_true",
                        help="also encode each clip at the model's default budgets, with its default --patience and "
                             "with 0 (off): the wall time the default early stopping saves")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",") if b]
    patiences = [int(p) for p in args.patience.split(",") if p]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, source in clips(Path(folder), args.frames, args.size).items():
            out = Path(folder, "out.pmt")
            results[name] = [run(source, out, budget, warm, args.frames, args.size)
                             for warm in (False, True) for budget in budgets]
            results[name] += [run(source, out, args.cap, False, args.frames, args.size, patience)
                              for patience in patiences]
            if args.defaults:
                results[name] += [run(source, out, None, False, args.frames, args.size, patience)
                                  for patience in (None, 0)]
    result = environment("convergence", {"budgets": budgets, "frames": args.frames, "size": args.size, "rank": 4,
                                         "interval": 4, "model": "tiny", "patience": patiences,
                                         "cap": args.cap})
    result["clips"] = results
    if args.out and budgets:
        plot(results, args.out.with_suffix(".png"))
    report(result, args.out)


if __name__ == "__main__":
    main()
