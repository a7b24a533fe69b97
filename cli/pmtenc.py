"""pmtenc: encode to .pmt.

    pmtenc -f promptus-dir -i DIR [-r 30] [--latent-codec f32|f16|q8] [--coding entropy|raw] OUT.pmt

This version imports prompt directories of the official Promptus implementation
(`frame_*.prompt` + `init.pth`); encoding video needs the generator models and the
fitting loop, which come with the encoder.
"""
from __future__ import annotations

import logging
import sys
from fractions import Fraction

from ..bitstream import Coding, LatentCodec
from ..bitstream.limits import MAX_FPS_TERM
from ..importers.promptus_dir import import_promptus_dir
from .common import (
    ArgumentParser,
    CommandError,
    add_common_flags,
    add_overwrite_flags,
    atomic_output,
    run,
    set_log_level,
)

INPUT_FORMATS = ("promptus-dir",)


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


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="pmtenc", description="Encode to a Promptus .pmt file.")
    parser.add_argument("-f", dest="format", required=True, choices=INPUT_FORMATS, help="input format")
    parser.add_argument("-i", dest="input", required=True, metavar="IN", help="input (a prompt directory)")
    parser.add_argument("-r", dest="rate", default="30", help="frame rate, e.g. 30 or 30000/1001 (default 30)")
    parser.add_argument("--latent-codec", choices=[c.name.lower() for c in LatentCodec], default="f32",
                        help="first-frame latent: f32 (lossless, default), f16 or q8 (8-bit, lossy)")
    parser.add_argument("--coding", choices=[c.name.lower() for c in Coding], default="entropy",
                        help="8-bit symbols entropy coded (default) or stored raw")
    parser.add_argument("output", metavar="OUT.pmt", help="output file, or - for standard output")
    add_overwrite_flags(parser)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_log_level(args.loglevel)
    fps = parse_rate(args.rate)
    with atomic_output(args.output, args.overwrite) as sink:
        size = import_promptus_dir(args.input, sink, fps=fps, latent_codec=LatentCodec[args.latent_codec.upper()],
                                   coding=Coding[args.coding.upper()])
    logging.info("wrote %s: %d bytes", args.output, size)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("pmtenc", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
