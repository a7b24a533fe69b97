"""pmtprobe: describe a .pmt file, like ffprobe.

    pmtprobe [-of json|text] [--show-units] FILE.pmt
"""
from __future__ import annotations

import json
import sys

from ..bitstream import read_streams
from ..bitstream.probe import describe, format_text
from .common import ArgumentParser, add_common_flags, open_input, run, set_log_level


class _CountingReader:
    """Counts the bytes read through it, so a pipe's size is known after reading."""

    def __init__(self, handle) -> None:
        self._handle = handle
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.count += len(data)
        return data


def _main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="pmtprobe", description="Describe a Promptus .pmt file.")
    parser.add_argument("input", metavar="FILE", help="the .pmt file, or - for standard input")
    parser.add_argument("-of", "--output-format", dest="output_format", choices=("json", "text"), default="text",
                        help="output format (default: text)")
    parser.add_argument("--show-units", action="store_true", help="list every unit's offset, type and size")
    add_common_flags(parser)
    args = parser.parse_args(argv)
    set_log_level(args.loglevel)
    with open_input(args.input) as handle:
        counted = _CountingReader(handle)
        streams = read_streams(counted, values=False)     # a probe needs shapes, not factor values
        # Bytes after the last stream would have been read as another stream's signature.
    report = describe(streams, counted.count, show_units=args.show_units)
    if args.output_format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_text(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run("pmtprobe", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
