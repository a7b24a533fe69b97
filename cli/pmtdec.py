"""pmtdec: decode a .pmt file.

    pmtdec -i IN.pmt --dump-prompts OUT.npz

This version writes the model-free output of the decoding process: the composed
conditioning of every frame. Video output needs the generator models (SD-Turbo or the
tiny test model), which come with the decoder.
"""
from __future__ import annotations

import logging
import sys

from ..bitstream import read_streams
from ..prompt_dump import write_prompt_dump
from .common import (
    ArgumentParser,
    CommandError,
    add_common_flags,
    add_overwrite_flags,
    atomic_output,
    open_input,
    run,
    set_log_level,
)


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="pmtdec", description="Decode a Promptus .pmt file.")
    parser.add_argument("-i", dest="input", required=True, metavar="IN", help="input .pmt file, or - for stdin")
    parser.add_argument("--dump-prompts", metavar="OUT.npz",
                        help="write every frame's composed conditioning (float32 [frames, 77, 1024]) to an .npz")
    parser.add_argument("output", nargs="?", metavar="OUTPUT", help="output video (needs a generator model)")
    add_overwrite_flags(parser)
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_log_level(args.loglevel)
    if args.output is not None or args.dump_prompts is None:
        raise CommandError("video output needs the generator models, which this version does not have yet; "
                           "use --dump-prompts OUT.npz")
    with open_input(args.input) as handle:
        streams = read_streams(handle)
    with atomic_output(args.dump_prompts, args.overwrite) as sink:
        frames = write_prompt_dump(streams, sink)
    logging.info("wrote the conditioning of %d frames to %s", frames, args.dump_prompts)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("pmtdec", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
