"""`python -m libpromptus.conformance [--engine E] [--model M] [DIR|FILE ...]`: run the conformance suite.

Checks every `.pmt` stream of the folders and files given (default: the installed
suite) against the expectation beside it, prints `PASS NAME ...` or `FAIL NAME reason`
per stream and `N passed, N failed`, and exits 1 when any stream fails. Tier 2 decodes
with the reference frames' model (tiny) unless `--model` names another, which skips it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..cli.common import ArgumentParser, add_common_flags, run, set_log_level
from ..engines import ENGINE_NAMES
from . import suite_dir
from .runner import verify

PROG = "libpromptus.conformance"


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Check the libpromptus decoder against the .pmt conformance "
                                                   "suite (SPEC.md Annex B).")
    parser.add_argument("paths", nargs="*", type=Path, metavar="DIR|FILE",
                        help="suite folders (searched recursively) or .pmt streams; default: the installed suite")
    parser.add_argument("--model", default=None, metavar="NAME|PATH",
                        help="generator for tier 2 (default: the expectations' model, tiny; another skips tier 2)")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="auto", help="inference engine (default auto)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                        help="auto: fp16 on CUDA, fp32 on the CPU")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for tier 2 (default 1, as the reference frames were decoded: "
                             "the suite's small frames gain nothing from more)")
    add_common_flags(parser)
    return parser


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    set_log_level(args.loglevel)
    return verify(args.paths or [suite_dir()], model=args.model, engine=args.engine, device=args.device,
                  precision=args.precision, threads=args.threads)


def main(argv: list[str] | None = None) -> int:
    return run(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
