"""pmteval: evaluate Promptus against H.265, H.264, AV1 and VP9 at matched bitrates.

    pmteval -i SOURCE [--codecs promptus,x265,x264,av1] [--bitrates 100k,225k,540k] [--model M]
            [--iterations N] [--first-iterations N] [-r RATE] [-ss S] [-t S] [-frames:v N] [-s WxH]
            [--fit crop|pad|scale] [--trace 2g|3g|4g|FILE ...] [--abr RULE] -o OUT_DIR

Every codec encodes the same frames at every bitrate; each run's record goes to
OUT_DIR/runs/, its file to OUT_DIR/streams/, and the summary to OUT_DIR/summary.json,
summary.md, rd.png and cdf.png. Each --trace adds abr-NAME.json and abr-NAME.md: every
codec's ladder in the streaming simulation, and (with promptus among the codecs)
Promptus's rendition set, encoded once as DASH into OUT_DIR/dash/, played by the real
client over loopback HTTP through a link the trace shapes (`evaluation.live`). Runs
finished before with the same clip and options are not redone.
"""
from __future__ import annotations

import json
import logging
import re
import signal
import sys
from fractions import Fraction
from pathlib import Path

from .common import ArgumentParser, CommandError, add_common_flags, run, set_log_level

log = logging.getLogger("libpromptus")

DEFAULT_CODECS = "promptus,x265,x264,av1"
DEFAULT_BITRATES = "100k,225k,540k"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pmteval", description="Evaluate Promptus against other codecs at matched bitrates.")
    parser.add_argument("-i", dest="input", required=True, metavar="SOURCE",
                        help="input video (file, frames/%%05d.png, - for y4m on stdin)")
    parser.add_argument("-o", dest="output", required=True, metavar="OUT_DIR", help="results folder")
    parser.add_argument("--codecs", default=DEFAULT_CODECS,
                        help=f"comma-separated: promptus, x265, x264, av1, vp9 (default {DEFAULT_CODECS})")
    parser.add_argument("--bitrates", default=DEFAULT_BITRATES, help=f"comma-separated (default {DEFAULT_BITRATES})")
    promptus = parser.add_argument_group("Promptus")
    promptus.add_argument("--model", default=None, metavar="NAME|PATH",
                          help="generator: sd-turbo, tiny, sd-turbo-random (SD-Turbo's architecture, random weights) "
                              "or a path (default $PROMPTUS_MODEL or sd-turbo)")
    promptus.add_argument("--iterations", type=int, default=None, help="iterations per keyframe (model default)")
    promptus.add_argument("--first-iterations", type=int, default=None,
                          help="iterations of a scene's first keyframe (the model's default, also when --iterations is given)")
    source = parser.add_argument_group("input (as pmtenc)")
    source.add_argument("-r", dest="rate", default=None, help="frame rate (default: the input's; 25 for images)")
    source.add_argument("-ss", dest="start", type=float, default=None, help="start time in seconds")
    source.add_argument("-t", dest="duration", type=float, default=None, help="duration in seconds")
    source.add_argument("-frames:v", "-vframes", dest="frames", type=int, default=None, help="frames to evaluate")
    source.add_argument("-s", dest="size", default=None, help="size WxH (default: the input's)")
    source.add_argument("--fit", choices=("crop", "pad", "scale"), default="crop", help="how -s changes the aspect")
    network = parser.add_argument_group("streaming simulation")
    network.add_argument("--trace", action="append", default=[], metavar="2g|3g|4g|FILE",
                         help="stream over this throughput trace (repeatable): the codecs' ladders simulated, "
                              "Promptus's DASH renditions played for real")
    network.add_argument("--trace-format", choices=("auto", "kbps", "mahimahi"), default="auto",
                         help="trace file format (auto: mahimahi for .up/.down/.mahi, else kbit/s per second)")
    network.add_argument("--segment-seconds", type=float, default=1.0, help="segment length (default 1)")
    network.add_argument("--abr", default="bba", metavar="RULE",
                         help="rate choice of the streaming sessions, simulated and played: bba, "
                              "bba:RESERVOIR:CUSHION, throughput (default bba)")
    report = parser.add_argument_group("reporting")
    report.add_argument("--severe-psnr", type=float, default=20.0,
                        help="without LPIPS, frames below this PSNR count as severely distorted (default 20 dB)")
    add_common_flags(parser)
    return parser


def _list(text: str, what: str) -> list[str]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise CommandError(f"--{what} {text!r}: an empty entry")
    if len(set(items)) != len(items):
        raise CommandError(f"--{what} {text!r}: an entry given twice")
    return items


def _check_plotting() -> None:
    try:
        import matplotlib  # noqa: F401 - only checked here, before hours of encoding
    except ImportError:
        raise CommandError("the plots need matplotlib: pip install 'libpromptus[eval]'") from None


def _terminate(signum, frame) -> None:
    """SIGTERM as Ctrl-C: the temporary files of the run in progress are removed on the way out."""
    raise KeyboardInterrupt


def _main(argv: list[str]) -> int:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _evaluate_command(_parser().parse_args(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _evaluate_command(args) -> int:
    set_log_level(args.loglevel)
    from ..dash.abr import parse_rule
    from ..encoder.ratecontrol import parse_bitrate
    from ..evaluation.abr import MAX_BUFFER
    from ..evaluation.registry import CODECS
    from ..evaluation.traces import load_trace
    from ..io.video_input import parse_size
    from .pmtenc import parse_rate

    codec_names = _list(args.codecs, "codecs")
    for name in codec_names:
        if name not in CODECS:
            raise CommandError(f"--codecs: unknown codec {name!r} (known: {', '.join(CODECS)})")
    bitrates = sorted(parse_bitrate(text) for text in _list(args.bitrates, "bitrates"))
    if len(set(bitrates)) != len(bitrates):
        raise CommandError(f"--bitrates {args.bitrates!r}: a bitrate given twice")
    for flag, value in (("--iterations", args.iterations), ("--first-iterations", args.first_iterations)):
        if value is not None and value < 0:
            raise CommandError(f"{flag} {value} is out of range")
    if args.frames is not None and args.frames < 1:
        raise CommandError(f"-frames:v {args.frames}: at least one frame")
    if not 0 < args.segment_seconds <= MAX_BUFFER:
        raise CommandError(f"--segment-seconds {args.segment_seconds}: must be positive and at most the "
                           f"{MAX_BUFFER:g}-s buffer")
    try:
        args.abr_rule = parse_rule(args.abr)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if args.abr.startswith("fixed"):
        raise CommandError(f"--abr {args.abr}: a fixed path is for pmtdec; pmteval compares bba or throughput")
    traces = [load_trace(spec, args.trace_format) for spec in args.trace]
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{args.output}: not a folder")
    _check_plotting()
    options = {"codecs": codec_names, "bitrates": bitrates, "model": args.model, "iterations": args.iterations,
               "first_iterations": args.first_iterations, "rate": args.rate, "start": args.start,
               "duration": args.duration, "frames": args.frames, "size": args.size, "fit": args.fit}
    rate = Fraction(*parse_rate(args.rate)) if args.rate else None
    size = parse_size(args.size) if args.size else None
    _evaluate(args, options, codec_names, bitrates, traces, out, rate, size)
    return 0


def _evaluate(args, options: dict, codec_names: list[str], bitrates: list[float], traces: list, out: Path,
              rate: Fraction | None, size: tuple[int, int] | None) -> None:
    from ..evaluation.clip import read_clip
    from ..evaluation.metrics import Metrics, SevereRule
    from ..evaluation.plots import cdf_figure, rd_figure
    from ..evaluation.registry import create_codec
    from ..evaluation.report import summarise, summary_markdown
    from ..evaluation.runner import run_all, write_bytes, write_json

    clip = read_clip(args.input, start=args.start, duration=args.duration, max_frames=args.frames, size=size,
                     fit=args.fit, rate=rate)
    log.info("%s: %d frames %dx%d at %s fps", args.input, len(clip.frames), clip.width, clip.height, clip.rate)
    metrics = Metrics(clip.width, clip.height)
    for note in metrics.notes.values():
        log.warning("%s", note)
    codecs = [create_codec(name, model=args.model, iterations=args.iterations,
                           first_iterations=args.first_iterations) for name in codec_names]
    records = run_all(clip, args.input, codecs, bitrates, out, metrics)
    severe = SevereRule(lpips="lpips" in metrics.names, psnr_below=args.severe_psnr)
    summary = summarise(records, metrics.names, metrics.notes, severe, options)
    title = f"{_source_name(args.input)}: {len(clip.frames)} frames {clip.width}x{clip.height}"
    write_json(out / "summary.json", summary)
    write_bytes(out / "summary.md", summary_markdown(summary).encode())
    write_bytes(out / "rd.png", rd_figure(summary["runs"], metrics.names, title))
    write_bytes(out / "cdf.png", cdf_figure(records, metrics.names, title))
    log.info("wrote %s", ", ".join(str(out / n) for n in ("summary.json", "summary.md", "rd.png", "cdf.png")))
    dash = _rendition_set(args, options, clip, bitrates, out) if traces and "promptus" in codec_names else None
    for trace in traces:
        _stream(trace, records, codec_names, clip, args, severe, metrics, out, dash)


def _rendition_set(args, options: dict, clip, bitrates: list[float], out: Path) -> tuple[Path, list[str]]:
    """Promptus as DASH (`pmtenc -f dash` at the evaluated bitrates) in OUT_DIR/dash/, for
    the real streaming sessions; kept and reused while the clip and options are the same."""
    import tempfile

    from ..encoder.dash import encode_dash
    from ..evaluation.promptus import write_images
    from ..evaluation.runner import bitrate_label, write_json

    folder, manifest = out / "dash", out / "dash" / "manifest.mpd"
    labels = [bitrate_label(b) for b in bitrates]
    settings = {**options, "clip": clip.digest(), "segment_seconds": args.segment_seconds}
    recorded = folder / "settings.json"
    if manifest.exists() and recorded.exists() and json.loads(recorded.read_text(encoding="utf-8")) == settings:
        log.info("%s: the rendition set is up to date", manifest)
        return manifest, labels
    log.info("encoding the rendition set %s (%s)", manifest, ", ".join(labels))
    with tempfile.TemporaryDirectory(prefix="pmteval-") as work:
        encode_dash(write_images(clip, Path(work)), str(manifest), [{"bitrate": b} for b in bitrates],
                    segment_seconds=args.segment_seconds, overwrite=True, model=args.model,
                    iterations=args.iterations, first_iterations=args.first_iterations, rate=clip.rate)
    write_json(recorded, settings)
    return manifest, labels


def _stream(trace, records: list[dict], codec_names: list[str], clip, args, severe, metrics,
            out: Path, dash: tuple[Path, list[str]] | None) -> None:
    """Simulate streaming every codec's ladder over `trace`, and play Promptus's rendition
    set `dash` for real over a link it shapes; write abr-NAME.json and .md."""
    from ..evaluation.abr import MAX_BUFFER, Rung, simulate
    from ..evaluation.live import stream_presentation
    from ..evaluation.report import abr_markdown, abr_report
    from ..evaluation.runner import write_bytes, write_json

    abr = args.abr_rule
    sessions = {}
    segment_seconds = args.segment_seconds
    for codec in codec_names:
        ladder = [Rung(r["label"], r["bitrate_bps"], r["frames"]) for r in records if r["codec"] == codec]
        session = simulate(ladder, trace, clip.rate, segment_seconds=segment_seconds, abr=abr)
        sessions[codec] = session.report(segment_seconds, severe)
    if dash is not None:
        log.info("streaming %s over a link shaped by %s", dash[0], trace.name)
        sessions[REAL_SESSION] = stream_presentation(*dash, trace, clip, metrics, severe, model=args.model,
                                                     abr=str(abr))
    report = abr_report(trace.name, trace.seconds, sessions, severe,
                        {"segment_seconds": segment_seconds, "abr": str(abr), "max_buffer_s": MAX_BUFFER})
    stem = "abr-" + re.sub(r"[^A-Za-z0-9._-]", "_", trace.name)
    write_json(out / f"{stem}.json", report)
    write_bytes(out / f"{stem}.md", abr_markdown(report, metrics.names).encode())
    log.info("wrote %s (%s)", out / f"{stem}.md", trace.name)


#: The row of the real DASH session in abr-NAME.json and .md.
REAL_SESSION = "promptus (DASH, played)"


def _source_name(source: str) -> str:
    """The source as the figures name it: a file's name; an image sequence with its two
    folders (`uvg/frames/%05d.png`), since its pattern alone says nothing."""
    path = Path(source)
    return "/".join(path.parts[-3:]) if "%" in path.name else path.name


def main(argv: list[str] | None = None) -> int:
    return run("pmteval", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
