"""pmtenc: encode video (or an official Promptus prompt directory) to .pmt.

    pmtenc -i INPUT [options] OUT.pmt                INPUT: a video file, frames/%05d.png, or - (y4m)
    pmtenc -f promptus-dir -i DIR [-r 30] OUT.pmt    import the official implementation's prompts
    pmtenc -i INPUT -f dash -b:v 60k,120k,240k -seg_duration 2 OUT/manifest.mpd
                                                     renditions and segments for adaptive streaming
    pmtenc -i INPUT --segment-seconds 2 --cluster auto OUT.pmt
                                                     segments fitted as tasks of a Ray cluster
"""
from __future__ import annotations

import logging
import sys
from fractions import Fraction

from ..bitstream import SIGNATURE, Coding, LatentCodec
from ..bitstream.limits import MAX_FPS_TERM, MAX_KEYFRAME_INTERVAL
from ..encoder.promptus_dir import import_promptus_dir
from ..encoder.ratecontrol import LOOKAHEAD
from ..io import network
from ..io.pipes import is_stdin, is_stdout
from ..process.profiles import TINY
from ..process.quantization import DEFAULT_LATENT_STEP
from .common import (
    ArgumentParser,
    CommandError,
    add_common_flags,
    add_overwrite_flags,
    open_output,
    add_progress_flags,
    atomic_output,
    run,
    set_log_level,
)
from .progress import Progress

#: -f: the input's format; `pmt` and `dash` name the output's instead (as FFmpeg's -f before an output), the
#: input being video
INPUT_FORMATS = ("video", "promptus-dir", "pmt", "dash")


def parse_rate(text: str) -> tuple[int, int]:
    """A frame rate as FFmpeg writes it ("30", "30000/1001", "29.97") -> (num, den)."""
    try:
        rate = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise CommandError(f"-r {text}: not a frame rate") from None
    if rate.denominator > 1 and "/" not in text:
        rate = rate.limit_denominator(1001)
    if rate <= 0 or rate.numerator > MAX_FPS_TERM or rate.denominator > MAX_FPS_TERM:
        raise CommandError(f"-r {text}: frame rate out of range")
    return rate.numerator, rate.denominator


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pmtenc", description="Encode to a Promptus .pmt file.")
    parser.add_argument("-i", dest="input", required=True, metavar="IN",
                        help="input video (file, frames/%%05d.png, - for y4m on stdin) or prompt directory")
    parser.add_argument("-f", dest="format", choices=INPUT_FORMATS, default="video",
                        help="input format (video, promptus-dir), or output format: pmt, or dash (an MPD and its "
                             "segments, one rendition per -b:v, --rank or -g in a comma-separated list)")
    parser.add_argument("output", metavar="OUT.pmt", help="output file, or - / pipe:1 for standard output, or tcp://HOST:PORT[?listen] (live: "
                             "each unit is written as soon as it is final)")
    source = parser.add_argument_group("input")
    source.add_argument("-r", dest="rate", default=None, help="frame rate (default: the input's; 30 for prompt dirs)")
    source.add_argument("-ss", dest="start", type=float, default=None, help="start time in seconds")
    source.add_argument("-t", dest="duration", type=float, default=None, help="duration in seconds")
    source.add_argument("-frames:v", "-vframes", dest="frames", type=int,
                        help="at most FRAMES frames (any count >= 1; the input may end first)")
    source.add_argument("-s", dest="size", default=None, help="output size WxH (default: the input's)")
    source.add_argument("--fit", choices=("crop", "pad", "scale"), default="crop",
                        help="how -s changes the aspect ratio (default crop, as the official code)")
    coding = parser.add_argument_group("rate and coding")
    coding.add_argument("-b:v", dest="bitrate", default=None, help="target bitrate, e.g. 225k: picks rank and -g")
    coding.add_argument("--rank", default=None, help="factor rank (default 8, or the rate control's)")
    coding.add_argument("-g", dest="interval", default=None, help="keyframe interval (default 10)")
    coding.add_argument("--decisions", choices=("trial", "formula"), default="trial",
                        help="with -b:v: choose rank, interval and refresh scenes by rate-distortion trial encodes "
                             "of the first frames (trial, default) or by the byte model alone (formula)")
    coding.add_argument("--keyframes", choices=("adaptive", "uniform"), default="adaptive",
                        help="with -b:v trials: place keyframes by how much the frames change, when the trials "
                             "measure it better (adaptive, default), or every -g frames (uniform)")
    coding.add_argument("-rc-lookahead", dest="lookahead", type=int, default=LOOKAHEAD,
                        help=f"frames the trials encode (default {LOOKAHEAD})")
    coding.add_argument("--scene-threshold", default="0.3",
                        help="normalised latent distance that starts a new scene (0 for equal frames, about 2 for "
                             "unrelated ones; default 0.3), or off")
    coding.add_argument("--latent-codec", choices=[c.name.lower() for c in LatentCodec], default=None,
                        help="first-frame latent: dct8 (transform coded, default for video), q8, f16, f32 "
                             "(default for prompt dirs)")
    coding.add_argument("--latent-step", type=float, default=DEFAULT_LATENT_STEP,
                        help=f"dct8 quantizer step, times each latent channel's standard deviation (default "
                             f"{DEFAULT_LATENT_STEP:g}; smaller: larger and more exact)")
    coding.add_argument("--coding", choices=[c.name.lower() for c in Coding], default="entropy",
                        help="8-bit symbols entropy coded (default) or stored raw")
    fitting = parser.add_argument_group("fitting")
    fitting.add_argument("--model", default=None, metavar="NAME|PATH",
                         help="generator: sd-turbo, tiny, sd-turbo-random (SD-Turbo's architecture, random weights) "
                              "or a path (default $PROMPTUS_MODEL or sd-turbo)")
    fitting.add_argument("--iterations", type=int, default=None, help="iterations per keyframe (default: the model's; official 1500 for sd-turbo)")
    fitting.add_argument("--first-iterations", type=int, default=None,
                         help="iterations for a scene's first keyframe (official 10000; default --iterations if given)")
    fitting.add_argument("--perceptual", choices=("auto", "lpips", "vgg", "ms-ssim", "none"), default="auto",
                         help="perceptual loss (auto: LPIPS or VGG-19 when their weights are present, else MS-SSIM)")
    fitting.add_argument("--alpha", type=float, default=0.8, help="MSE weight of the loss (official 0.8)")
    fitting.add_argument("--warm-start", action="store_true", help="start each keyframe from the previous one")
    fitting.add_argument("--beta", dest="temporal_beta", type=float, default=None,
                         help="the paper's temporal smoothing: beta*loss + (1-beta)*|c_t - c_t-1| (paper 0.2; "
                              "default off, as the official code)")
    fitting.add_argument("--patience", type=int, default=None, metavar="N",
                         help="stop a keyframe's fitting after N iterations without a better loss, 0 to fit the whole "
                              f"budget (default: the model's: {TINY.patience} for tiny, off for sd-turbo)")
    fitting.add_argument("--seed", type=int, default=0, help="seed of the factor initialisation")
    fitting.add_argument("--scalable", action="store_true",
                         help="fit every keyframe so that each rank prefix of its factors is a usable rung (nested "
                              "dropout, as ScalablePromptus): a lower rank is cut from the stream without re-encoding "
                              "(libpromptus.bitstream.truncate_rank)")
    fitting.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:N")
    fitting.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                         help="auto: bf16 on CUDA, fp32 on the CPU")
    fitting.add_argument("--resume", action="store_true",
                         help="continue an interrupted encode of the same input and options from its last keyframe "
                              "(a segmented one: with the segments it has not finished)")
    fitting.add_argument("--segment-seconds", type=float, default=None, metavar="S",
                         help="encode closed segments of S seconds independently and merge them (--resume reuses "
                              "the finished ones)")
    fitting.add_argument("--jobs", type=int, default=1, help="segments encoded at once (processes; default 1)")
    fitting.add_argument("--cluster", default=None, metavar="ADDRESS",
                         help="encode the segments as tasks of a Ray cluster: auto (the cluster this machine is a "
                              "node of), local (a private one here) or the head's HOST:PORT; needs --segment-seconds "
                              "and pip install 'libpromptus[cluster]'")
    fitting.add_argument("-threads", dest="threads", type=int, default=None, metavar="N",
                         help="torch CPU threads per encode or segment; the bytes depend on them (default: the cores "
                              "divided by --jobs, 1 per task on a cluster)")
    dash = parser.add_argument_group("dash output (-f dash; FFmpeg's dash muxer options)")
    dash.add_argument("-seg_duration", dest="seg_duration", type=float, default=None, metavar="S",
                      help="segment length in seconds (default 2); every segment starts a scene, so a client "
                           "may switch rendition at every boundary")
    dash.add_argument("-init_seg_name", dest="init_seg_name", default=None, metavar="NAME",
                      help="init segment names (default init-stream$RepresentationID$.$ext$)")
    dash.add_argument("-media_seg_name", dest="media_seg_name", default=None, metavar="NAME",
                      help="media segment names (default chunk-stream$RepresentationID$-$Number%%05d$.$ext$)")
    report = parser.add_argument_group("reporting")
    report.add_argument("--stats", metavar="FILE.jsonl", help="one JSON record per keyframe (frames, loss, PSNR)")
    add_progress_flags(report)
    add_overwrite_flags(parser)
    add_common_flags(parser)
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    set_log_level(args.loglevel)
    if args.format == "promptus-dir":
        fps = parse_rate(args.rate or "30")
        with atomic_output(args.output, args.overwrite) as sink:
            size = import_promptus_dir(args.input, sink, fps=fps,
                                       latent_codec=LatentCodec[(args.latent_codec or "f32").upper()],
                                       coding=Coding[args.coding.upper()])
        logging.info("wrote %s: %d bytes", args.output, size)
        return 0
    return _encode_video(args)


def _refuse_pmt_input(name: str) -> None:
    """Refuse a `.pmt` stream given as the video input, before torch and the model load.

    pmtenc reads no `.pmt` input (its --resume reads only its own checkpoint): a stream
    would otherwise reach PyAV, which refuses it only after seconds and 400 MB of imports.
    """
    if is_stdin(name) or "%" in name:
        return
    try:
        with open(name, "rb") as handle:
            head = handle.read(len(SIGNATURE))
    except OSError:
        return                        # not a readable file: the video reader says why
    if head == SIGNATURE:
        raise CommandError(f"{name}: a Promptus .pmt stream, not a video (pmtenc encodes video; "
                           "decode the stream with pmtdec first)")


def _encode_video(args) -> int:
    _refuse_pmt_input(args.input)
    from ..api import encode
    from ..encoder.job import encode_stream
    from ..encoder.ratecontrol import parse_bitrate
    from ..io.video_input import parse_size

    live = is_stdout(args.output) or network.is_url(args.output)
    if live and (args.resume or args.segment_seconds is not None or args.cluster is not None):
        raise CommandError("--resume, --segment-seconds and --cluster need a file output: a live stream cannot be "
                           "taken back")
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"-threads {args.threads} is out of range")
    if live and args.progress is not None and is_stdout(args.progress):
        raise CommandError("-progress pipe:1 and the stream on standard output would mix; use -progress pipe:2")
    dash = args.format == "dash"
    if not dash and (args.seg_duration, args.init_seg_name, args.media_seg_name) != (None, None, None):
        raise CommandError("-seg_duration, -init_seg_name and -media_seg_name are options of -f dash")
    if args.cluster is not None and args.segment_seconds is None and not dash:
        raise CommandError("--cluster runs segments as tasks: give --segment-seconds S")
    if dash and (live or args.resume or args.segment_seconds is not None):
        raise CommandError("-f dash writes an MPD and its segments to a folder: give OUT/manifest.mpd (segments "
                           "come from -seg_duration; --resume is per stream)")
    renditions = _renditions(args, parse_bitrate, allow_lists=dash)
    iterations = args.iterations
    first = args.first_iterations if args.first_iterations is not None else iterations
    for name, value in (("--iterations", iterations), ("--first-iterations", first), ("--patience", args.patience)):
        if value is not None and value < 0:
            raise CommandError(f"{name} {value} is out of range")
    threshold = None if args.scene_threshold == "off" else float(args.scene_threshold)
    rate = Fraction(*parse_rate(args.rate)) if args.rate else None
    options = dict(model=args.model, **({} if dash else renditions[0]), first_iterations=first, iterations=iterations,
                   scene_threshold=threshold, latent_codec=args.latent_codec or "dct8",
                   latent_step=args.latent_step, coding=args.coding, decisions=args.decisions,
                   keyframes=args.keyframes, lookahead=args.lookahead,
                   perceptual=args.perceptual, alpha=args.alpha, warm_start=args.warm_start,
                   temporal_beta=args.temporal_beta, patience=args.patience, seed=args.seed, scalable=args.scalable,
                   device=args.device, precision=args.precision,
                   size=parse_size(args.size) if args.size else None, fit=args.fit, rate=rate, start=args.start,
                   duration=args.duration, max_frames=args.frames)
    show_bar = not args.nostats and sys.stderr.isatty() and logging.getLogger().level <= logging.INFO
    stats = open(args.stats, "a" if args.resume else "w") if args.stats else None  # noqa: SIM115 - closed below
    progress: Progress | None = None
    segmented = args.segment_seconds is not None
    done, keyframes, finished = [0], [0], []

    def on_start(frame_count: int | None, rate: Fraction) -> None:
        nonlocal progress
        progress = Progress(frame_count, rate, target=args.progress, bar=show_bar)

    def on_iteration(keyframe: int, iteration: int, loss: float) -> None:
        if iteration == 1 or iteration % 5 == 0:
            progress.note(f"keyframe {keyframe} iteration {iteration} loss {loss:.4f}")

    def on_keyframe(report) -> None:
        # one stream's keyframes come in order, covering every frame up to theirs; a segmented
        # encode's come from its segments as they finish, each covering its own interval
        progress.advance(report.frame_index + 1 - (report.first_frame if segmented else done[0]))
        done[0] = report.frame_index + 1
        keyframes[0] += 1
        progress.note(f"{segments_done()}keyframe {report.frame_index}: loss {report.loss:.4f}, "
                      f"PSNR {min(report.psnr):.2f} dB")
        logging.debug("keyframe %d: %d iterations, loss %.4f, PSNR %.2f dB", report.frame_index, report.iterations,
                      report.loss, min(report.psnr))

    def on_segment(record) -> None:
        finished.append(record)
        if record.reused:
            progress.advance(record.count)
        progress.note(f"{segments_done()}keyframes {keyframes[0]}")
        logging.debug("segment %d (frames %d-%d): %s on %s in %.1f s%s", record.segment, record.first,
                      record.first + record.count - 1, "reused" if record.reused else "encoded", record.node,
                      record.seconds, f", {record.attempts} attempts" if record.attempts > 1 else "")

    def segments_done() -> str:
        return f"segments {len(finished)}/{finished[0].segments}, " if finished else ""

    completed = False
    try:
        callbacks = dict(stats=stats, on_start=on_start, on_keyframe=on_keyframe)
        if dash:
            return _encode_dash(args, renditions, options)
        if live:
            with open_output(args.output) as sink:
                result = encode_stream(args.input, sink, on_iteration=on_iteration, **callbacks, **options)
        elif segmented:
            result = encode(args.input, args.output, overwrite=bool(args.overwrite), resume=args.resume,
                            segment_seconds=args.segment_seconds, jobs=args.jobs, cluster=args.cluster,
                            threads=args.threads, on_segment=on_segment, **callbacks, **options)
        else:
            result = encode(args.input, args.output, overwrite=bool(args.overwrite), resume=args.resume,
                            jobs=args.jobs, threads=args.threads, on_iteration=on_iteration, **callbacks, **options)
        completed = True
    finally:
        if stats is not None:
            stats.close()
        if progress is not None:
            progress.close(finished=completed)
    psnrs = [p for k in result.summary.keyframes for p in k.psnr]
    logging.info("wrote %s: %d frames, %d bytes, %.1f kbit/s (rank %d, keyframe interval %d), PSNR %.2f dB",
                 "stdout" if is_stdout(args.output) else network.redact(args.output), result.frames, result.bytes, result.bitrate_bps / 1000, result.rank, result.interval,
                 sum(psnrs) / len(psnrs))
    return 0


def _renditions(args, parse_bitrate, *, allow_lists: bool) -> list[dict]:
    """The rate options of each rendition: -b:v, --rank and -g, each one value or (with
    -f dash) a comma-separated list; lists have one length, a single value applies to all."""
    given = {}
    for option, key, parse in (("-b:v", "bitrate", parse_bitrate), ("--rank", "rank", int), ("-g", "interval", int)):
        text = getattr(args, key)
        if text is None:
            continue
        parts = text.split(",")
        if len(parts) > 1 and not allow_lists:
            raise CommandError(f"{option} {text}: a list of values makes renditions, for -f dash")
        try:
            values = [parse(part) for part in parts]
        except ValueError as err:
            raise CommandError(str(err) if option == "-b:v" else f"{option} {text}: not a whole number") from None
        for value in values:
            if option != "-b:v" and value < 1:
                raise CommandError(f"{option} {value} is out of range")
            if option == "-g" and value > MAX_KEYFRAME_INTERVAL:
                raise CommandError(f"-g {value}: keyframe intervals are 1..{MAX_KEYFRAME_INTERVAL}")
        given[key] = values
    count = max((len(v) for v in given.values()), default=1)
    if any(len(v) not in (1, count) for v in given.values()):
        raise CommandError("-b:v, --rank and -g lists must have one length (a single value applies to every rendition)")
    rungs = [{key: values[0] if len(values) == 1 else values[n] for key, values in given.items()} for n in range(count)]
    return [{"bitrate": None, "rank": None, "interval": None, **rung} for rung in rungs]


def _encode_dash(args, renditions: list[dict], options: dict) -> int:
    from ..dash.manifest import INIT_TEMPLATE, MEDIA_TEMPLATE
    from ..encoder.dash import encode_dash

    if args.seg_duration is not None and not args.seg_duration > 0:
        raise CommandError(f"-seg_duration {args.seg_duration}: must be positive")
    result = encode_dash(args.input, args.output, renditions, segment_seconds=args.seg_duration or 2.0,
                         init_name=args.init_seg_name or INIT_TEMPLATE, media_name=args.media_seg_name or MEDIA_TEMPLATE,
                         overwrite=bool(args.overwrite), jobs=args.jobs, cluster=args.cluster, threads=args.threads,
                         **options)
    presentation = result.presentation
    logging.info("wrote %s: %d renditions of %d frames in %d segments of %d frames (%s kbit/s)", args.output,
                 len(result.renditions), presentation.total_frames, presentation.segment_count,
                 presentation.segment_frames, ", ".join(f"{r.mean_bitrate_bps / 1000:.1f}" for r in result.renditions))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("pmtenc", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
