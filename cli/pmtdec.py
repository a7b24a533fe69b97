"""pmtdec: decode a .pmt file to video, images or prompts.

    pmtdec -i IN.pmt [options] OUTPUT            OUTPUT: out.mkv, out.mp4, out.y4m, out/%05d.png, - (y4m)
    pmtdec -i IN.pmt --dump-prompts OUT.npz      the per-frame conditioning, no model needed
    pmtdec -i IN.pmt --conceal OUTPUT            decode a damaged file, concealing what was lost
    pmtdec -i IN.pmt|DIR --verify                check against the conformance expectations (SPEC.md Annex B)
"""
from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Iterator

from ..bitstream import ReadUnit, SequenceHeader, Stream, outline_streams, read_from_frame
from ..decoder.decoder import read_arriving, read_input
from ..decoder.prompt_dump import write_prompt_dump
from ..io.pipes import is_stdin, is_stdout
from .common import (
    ArgumentParser,
    CommandError,
    add_common_flags,
    add_overwrite_flags,
    add_progress_flags,
    atomic_output,
    open_input,
    run,
    set_log_level,
)
from .progress import Progress


def _parser() -> ArgumentParser:
    from ..engines import DEFAULT_BATCH, ENGINE_NAMES

    parser = ArgumentParser(prog="pmtdec", description="Decode a Promptus .pmt file.")
    parser.add_argument("-i", dest="input", required=True, metavar="IN",
                        help="input .pmt file, - for stdin, http(s)://, tcp://HOST:PORT[?listen], or an MPD at "
                             "http(s)://HOST/PATH/NAME.mpd (adaptive streaming)")
    parser.add_argument("output", nargs="?", metavar="OUTPUT",
                        help="output: .mkv (FFV1, lossless), .mp4/.mov (H.264 yuv420p, CRF 17), .y4m, "
                             "out/%%05d.png, or - for stdout")
    parser.add_argument("--dump-prompts", metavar="OUT.npz",
                        help="also write every frame's composed conditioning (float32 [frames, T, D]) to an .npz")
    parser.add_argument("--verify", action="store_true",
                        help="instead of decoding, check IN against the conformance expectation beside it "
                             "(NAME.json or NAME.res); IN may be a folder, e.g. a conformance suite, whose "
                             ".pmt streams are all checked. Prints PASS or FAIL per stream, exits 1 if any fails; "
                             "tier 2 decodes with --model/--engine/--device/--precision on one CPU thread")
    parser.add_argument("--conceal", action="store_true",
                        help="decode a damaged file instead of stopping at its first damaged unit: lost keyframes "
                             "are interpolated across or repeated, a lost scene start continues the latent chain; "
                             "the concealed frames are listed on stderr")
    model = parser.add_argument_group("model and engine")
    model.add_argument("--model", default=None, metavar="NAME|PATH",
                       help="generator: a registered name (sd-turbo, tiny, sd-turbo-random) or a path; default $PROMPTUS_MODEL, "
                            "else the model the stream names")
    model.add_argument("--force-model", action="store_true", help="decode even if the stream names another model")
    model.add_argument("--engine", choices=ENGINE_NAMES, default="auto", help="inference engine (default auto)")
    model.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    model.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                       help="auto: fp16 on CUDA, fp32 on the CPU")
    model.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"frames per engine call "
                                                                        f"(default {DEFAULT_BATCH})")
    adaptive = parser.add_argument_group("adaptive streaming (IN: http://HOST/PATH/NAME.mpd, pmtenc -f dash's output)")
    adaptive.add_argument("--abr", default=None, metavar="RULE",
                          help="how the rendition of each segment is chosen: bba (default; bba:RESERVOIR:CUSHION in "
                               "seconds, default 5:10), throughput, or fixed:I[,J,...] (renditions by rising "
                               "bandwidth, one per segment, the last repeated)")
    adaptive.add_argument("--abr-log", default=None, metavar="FILE.jsonl",
                          help="one JSON record per segment: rendition, bytes, download time, throughput, buffer, stall")
    adaptive.add_argument("--max-buffer", type=float, default=None, metavar="S",
                          help="seconds of media fetched ahead at most (default 30; at least one segment)")
    frames = parser.add_argument_group("frames")
    frames.add_argument("--start-frame", type=int, default=0, metavar="N", help="first frame to output")
    frames.add_argument("-frames:v", "-vframes", dest="frames", type=int, default=None, metavar="N",
                        help="number of frames to output")
    output = parser.add_argument_group("output")
    output.add_argument("-c:v", "-vcodec", dest="codec", default=None,
                        help="video encoder (default: by OUTPUT; another starts from its own defaults, as in FFmpeg; "
                             "lossless .mp4: -c:v libx264rgb -crf 0)")
    output.add_argument("-crf", type=int, default=None,
                        help="constant rate factor for x264/x265-style encoders (.mp4/.mov default 17)")
    output.add_argument("-pix_fmt", default=None, help="pixel format of the encoder (.mp4/.mov default yuv420p)")
    output.add_argument("-f", dest="format", choices=("yuv4mpegpipe", "rawvideo"), default=None,
                        help="format on standard output: yuv4mpegpipe (default) or rawvideo (rgb24)")
    add_progress_flags(output)
    add_overwrite_flags(parser)
    add_common_flags(parser)
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    set_log_level(args.loglevel)
    if args.verify:
        return _verify(args)
    if args.output is None and args.dump_prompts is None:
        raise CommandError("no output: give an OUTPUT video or --dump-prompts OUT.npz")
    if args.batch < 1 or args.start_frame < 0 or (args.frames is not None and args.frames < 1):
        raise CommandError("--batch and -frames:v must be at least 1, --start-frame at least 0")
    if args.output is not None and is_stdout(args.output) and args.progress is not None \
            and is_stdout(args.progress):
        raise CommandError("-progress pipe:1 and video on standard output would mix; use -progress pipe:2")
    with open_input(args.input, abr=args.abr, abr_log=args.abr_log, max_buffer=args.max_buffer) as handle:
        outlines = None
        if not args.conceal and _is_regular_file(handle):
            # a file is checked whole first, keeping only each stream's outline (memory stays
            # that of one unit whatever the file declares), so a bad file fails before the
            # model loads, and --start-frame seeks to the scene start it needs
            outlines = outline_streams(handle)
        if args.conceal or args.dump_prompts is not None:
            # concealment scans the whole input and the dump declares its frame count first:
            # these read the input before decoding
            if outlines is not None:
                handle.seek(0)
            streams, _ = read_input(handle, conceal=args.conceal)
            if args.dump_prompts is not None:
                with atomic_output(args.dump_prompts, args.overwrite) as sink:
                    count = write_prompt_dump(streams, sink)
                logging.info("wrote the conditioning of %d frames to %s", count, args.dump_prompts)
            if args.output is not None:
                _decode_video(args, streams[0].header, sum(s.frame_count for s in streams), streams=streams)
        elif outlines is not None:
            first_frame, units = read_from_frame(handle, outlines, args.start_frame)
            _decode_video(args, outlines[0].header, sum(o.frame_count for o in outlines), units=units,
                          first_frame=first_frame)
        else:
            header, units = read_arriving(handle)
            _decode_video(args, header, None, units=units)
    return 0


def _verify(args) -> int:
    """`--verify`: run the conformance checks on the input file or folder; no output is written."""
    from pathlib import Path

    from ..conformance.runner import verify

    if args.output is not None or args.dump_prompts is not None:
        raise CommandError("--verify writes nothing: give no OUTPUT and no --dump-prompts")
    if args.conceal:
        raise CommandError("--verify checks how damage is reported, so it does not go with --conceal")
    if is_stdin(args.input):
        raise CommandError("--verify needs a .pmt file or a folder, not standard input")
    return verify([Path(args.input)], model=args.model, engine=args.engine, device=args.device,
                  precision=args.precision)


def _is_regular_file(handle) -> bool:
    try:
        return stat.S_ISREG(os.fstat(handle.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):     # a pipe's or a socket's reader, a download
        return False


def _decode_video(args, header: SequenceHeader, total: int | None, *, streams: list[Stream] | None = None,
                  units: Iterator[ReadUnit] | None = None, first_frame: int = 0) -> None:
    """Decode to the video output: whole `streams` read already, or `units` as they arrive
    or from a seek point (the frames of each interval are written as soon as its closing
    keyframe is in; `first_frame`: the display index of their first stream's frame 0);
    `total`: the input's frame count, None while it is still arriving."""
    from fractions import Fraction
    from pathlib import Path

    from ..decoder.decoder import Decoder
    from ..io.video_output import VideoWriter, output_format

    if total is not None:
        if args.start_frame >= total:
            raise CommandError(f"--start-frame {args.start_frame}: the stream has {total} frames")
        wanted = total - args.start_frame if args.frames is None else min(args.frames, total - args.start_frame)
    else:                          # arriving: the header's count, when it declares one, is a guess for the bar
        wanted = args.frames
    if not args.overwrite and not is_stdout(args.output) and "%" not in args.output \
            and Path(args.output).exists():
        raise CommandError(f"{args.output}: already exists (use -y to overwrite)")
    decoder = Decoder(header, model=args.model, engine=args.engine, device=args.device, precision=args.precision,
                      force_model=args.force_model)
    logging.info("decoding %s frames %dx%d with %s on %s (%s, batch %d)",
                 "the" if wanted is None else wanted, header.width, header.height, decoder.generator.name,
                 decoder.engine.device, decoder.engine.name, args.batch)
    rate = Fraction(header.fps_num, header.fps_den)
    fmt = output_format(args.output, format=args.format, codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt)
    show_bar = not args.nostats and sys.stderr.isatty() and logging.getLogger().level <= logging.INFO
    progress = Progress(wanted if wanted is not None else header.frame_count or None, rate, target=args.progress,
                        bar=show_bar)
    try:
        writer = VideoWriter(args.output, header.width, header.height, rate, fmt, overwrite=bool(args.overwrite))
    except BaseException:
        progress.close(finished=False)
        raise
    finished = False
    try:
        frames = (decoder.decode(streams, batch=args.batch, start_frame=args.start_frame, frame_count=wanted)
                  if streams is not None else
                  decoder.decode_units(units, batch=args.batch, start_frame=args.start_frame, frame_count=wanted,
                                       first_frame=first_frame))
        for frame in frames:
            writer.write(frame.image)
            progress.advance(arrived=frame.arrived)
        writer.close()
        finished = True
    finally:
        if not finished:
            writer.abort()
        progress.close(finished=finished)
    logging.info("wrote %d frames to %s", writer.frames, "stdout" if is_stdout(args.output) else args.output)


def main(argv: list[str] | None = None) -> int:
    return run("pmtdec", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
