"""The evaluation's summaries: JSON objects and the Markdown tables written from them."""
from __future__ import annotations

from collections.abc import Sequence

from .metrics import SevereRule
from .rd import bd_rate

__all__ = ["abr_markdown", "abr_report", "bd_rates", "summarise", "summary_markdown"]

TEST_CODEC = "promptus"
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "lpips": False}
METRIC_TITLES = {"psnr": "PSNR dB", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "lpips": "LPIPS"}
_DIGITS = {"psnr": 2, "ssim": 4, "ms_ssim": 4, "lpips": 4}
BD_METHOD = ("Bjøntegaard delta rate: log rate fitted as a function of quality by PCHIP (piecewise cubic "
             "Hermite), integrated exactly over the overlapping quality range; negative: Promptus needs fewer bits")


def bd_rates(records: Sequence[dict], metrics: Sequence[str]) -> dict:
    """{metric: {baseline: {"percent", "note", "overlap"}}} of Promptus against each other codec."""
    out: dict = {}
    if TEST_CODEC not in {r["codec"] for r in records}:
        return out
    for metric in metrics:
        points: dict[str, list[tuple[float, float | None]]] = {}
        for record in records:
            points.setdefault(record["codec"], []).append((record["bitrate_bps"], record["mean"][metric]))
        test = points[TEST_CODEC]
        out[metric] = {}
        for codec, anchor in points.items():
            if codec == TEST_CODEC:
                continue
            result = bd_rate(anchor, test, higher_is_better=HIGHER_IS_BETTER[metric])
            out[metric][codec] = {"percent": result.percent, "note": result.note,
                                  "overlap": list(result.overlap) if result.overlap else None}
    return out


def summarise(records: Sequence[dict], metrics: Sequence[str], notes: dict[str, str], severe: SevereRule,
              options: dict) -> dict:
    """The summary of all runs: one row per run, the BD-rates, what was left out and why."""
    runs = [{
        "codec": r["codec"], "label": r["label"], "target_bps": r["target_bps"], "bitrate_bps": r["bitrate_bps"],
        "payload_bitrate_bps": r["payload_bitrate_bps"], "file_bytes": r["file_bytes"],
        "payload_bytes": r["payload_bytes"], "rate_error": r["bitrate_bps"] / r["target_bps"] - 1,
        "mean": r["mean"], "severe_share": severe.share(r["frames"]), "encode_s": r["encode_s"],
        "decode_s": r["decode_s"], "file": r["file"]} for r in records]
    return {"clip": records[0]["clip"], "options": options, "metrics": list(metrics), "notes": notes,
            "severe_rule": severe.label, "runs": runs, "bd_rate_method": BD_METHOD,
            "bd_rate": bd_rates(records, metrics)}


def _number(value: float | None, metric: str) -> str:
    return "inf" if value is None else f"{value:.{_DIGITS[metric]}f}"


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown: the runs table, the BD-rate table, the notes."""
    clip = summary["clip"]
    metrics = summary["metrics"]
    lines = [(f"Source `{clip['source']}`: {clip['frames']} frames {clip['width']}x{clip['height']} at "
              f"{clip['rate']} fps ({clip['duration_s']:.3f} s). Bitrates count every byte of each file; payload "
              "is the coded video alone."), "",
             ("| codec | target | file kbit/s | payload kbit/s | file / payload bytes | "
              + " | ".join(METRIC_TITLES[m] for m in metrics) + " | severe | encode s |"),
             "|---|---|---|---|---|" + "---|" * len(metrics) + "---|---|"]
    for run in summary["runs"]:
        values = " | ".join(_number(run["mean"][m], m) for m in metrics)
        lines.append(f"| {run['codec']} | {run['label']} | {run['bitrate_bps'] / 1000:.1f} | "
                     f"{run['payload_bitrate_bps'] / 1000:.1f} | {run['file_bytes']} / {run['payload_bytes']} | "
                     f"{values} | {run['severe_share'] * 100:.1f} % | {run['encode_s']:.1f} |")
    lines += ["", f"Severe: share of frames with {summary['severe_rule']}."]
    if summary["bd_rate"]:
        baselines = list(next(iter(summary["bd_rate"].values())))
        lines += ["", "BD-rate of Promptus against each baseline (" + summary["bd_rate_method"] + "):", "",
                  "| metric | " + " | ".join(baselines) + " |", "|---|" + "---|" * len(baselines)]
        for metric, row in summary["bd_rate"].items():
            cells = []
            for codec in baselines:
                entry = row[codec]
                cells.append(entry["note"] if entry["percent"] is None else f"{entry['percent']:+.1f} %")
            lines.append(f"| {METRIC_TITLES[metric]} | " + " | ".join(cells) + " |")
    for note in summary["notes"].values():
        lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def abr_report(trace_name: str, trace_seconds: int, sessions: dict[str, dict], severe: SevereRule,
               options: dict) -> dict:
    """The streaming simulation of every codec's ladder over one trace."""
    return {"trace": trace_name, "trace_seconds": trace_seconds, "options": options, "severe_rule": severe.label,
            "codecs": sessions}


def abr_markdown(report: dict, metrics: Sequence[str]) -> str:
    """One row per codec: quality shown, bitrate fetched, startup, stalls, severe share."""
    options = report["options"]
    lines = [(f"Trace `{report['trace']}` ({report['trace_seconds']} s), {options['segment_seconds']:g}-s segments, "
              f"ABR `{options['abr']}` (bba:RESERVOIR:CUSHION in seconds), buffer {options['max_buffer_s']:g} s."),
             "",
             ("| codec | mean kbit/s | " + " | ".join(METRIC_TITLES[m] for m in metrics)
              + " | startup s | stall s (events) | switches | severe |"),
             "|---|---|" + "---|" * len(metrics) + "---|---|---|---|"]
    for codec, session in report["codecs"].items():
        values = " | ".join(_number(session["mean"][m], m) for m in metrics)
        lines.append(f"| {codec} | {session['mean_bitrate_bps'] / 1000:.1f} | {values} | {session['startup_s']:.2f} | "
                     f"{session['stall_s']:.2f} ({session['stalls']}) | {session['switches']} | "
                     f"{session['severe_share'] * 100:.1f} % |")
    lines += ["", f"Severe: share of shown frames with {report['severe_rule']}."]
    return "\n".join(lines) + "\n"
