"""What every libpromptus command shares: flags, one-line errors, exit codes, atomic output.

Commands follow FFmpeg's conventions: `-i` names the input, `-` or `pipe:` means a
standard stream, `-y`/`-n` decide whether an existing output is overwritten, and
`-loglevel` sets verbosity. Any failure prints one line `PROG: error: ...` on stderr and
exits non-zero; no traceback reaches the user and no partial output file is left.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NoReturn

from ..bitstream import InvalidDataError
from ..io import network
from ..io.files import TemporaryOutput
from ..io.pipes import is_stdin, is_stdout

EXIT_FAILURE = 1
EXIT_USAGE = 2
LOG_LEVELS = {"quiet": logging.CRITICAL + 1, "error": logging.ERROR, "warning": logging.WARNING,
              "info": logging.INFO, "verbose": logging.DEBUG, "debug": logging.DEBUG}


class CommandError(Exception):
    """A failure the user can act on, reported as one line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} -h)\n")
        raise SystemExit(EXIT_USAGE)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-loglevel", "--loglevel", choices=sorted(LOG_LEVELS), default="info",
                        help="how much to print on stderr (default: info)")


def add_progress_flags(group: argparse._ActionsContainer) -> None:
    """FFmpeg's `-progress URL` and `-nostats` (`cli.progress.Progress` serves both)."""
    group.add_argument("-progress", default=None, metavar="URL",
                       help="write key=value progress blocks to pipe:1, pipe:2 or a file")
    group.add_argument("-nostats", action="store_true", help="no progress bar on a terminal")


def add_overwrite_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-y", dest="overwrite", action="store_const", const=True,
                       help="overwrite the output file without asking")
    group.add_argument("-n", dest="overwrite", action="store_const", const=False,
                       help="never overwrite the output file (the default: fail if it exists)")


@contextmanager
def open_input(name: str, *, abr: str | None = None, abr_log: str | None = None,
               max_buffer: float | None = None) -> Iterator[BinaryIO]:
    """Open a file, standard input for `-`/`pipe:`, or a URL: http(s):// (read as it
    downloads), tcp://HOST:PORT or tcp://HOST:PORT?listen (`libpromptus.io.network`), or
    an MPD at http(s)://…/NAME.mpd, read as the path its `abr` rule fetches
    (`libpromptus.dash.client`; `abr_log`: its per-segment records, JSON Lines;
    `max_buffer`: the seconds of media it fetches ahead at most)."""
    from ..dash.client import MAX_BUFFER_S, DashReader, is_manifest_url

    if (abr, abr_log, max_buffer) != (None, None, None) and not is_manifest_url(name):
        raise CommandError("--abr, --abr-log and --max-buffer need an MPD input (http://HOST/PATH/NAME.mpd)")
    if is_stdin(name):
        yield sys.stdin.buffer
        return
    if is_manifest_url(name):
        from ..dash.abr import parse_rule

        try:
            rule = parse_rule(abr or "bba")
        except ValueError as err:
            raise CommandError(str(err)) from None
        log = open(abr_log, "w") if abr_log else None  # noqa: SIM115 - closed below
        try:
            with DashReader(name, rule, log=log, max_buffer=MAX_BUFFER_S if max_buffer is None else max_buffer) \
                    as reader:
                yield io.BufferedReader(reader)
        finally:
            if log is not None:
                log.close()
        return
    if network.is_url(name):
        with network.open_input(name) as handle:
            yield handle
        return
    with open(name, "rb") as handle:
        yield handle


@contextmanager
def open_output(name: str) -> Iterator[BinaryIO]:
    """A live output: standard output for `-`/`pipe:`, or tcp://HOST:PORT[?listen].

    The stream ends cleanly when the block does; on a failure a connection is reset, so
    the reader sees an error rather than a shorter stream.
    """
    if is_stdout(name):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if not network.is_url(name):
        raise CommandError(f"{name}: not a live output (give -, pipe: or tcp://HOST:PORT[?listen])")
    sink = network.open_output(name)
    try:
        yield sink
    except BaseException:
        sink.abort()
        raise
    sink.close()


@contextmanager
def atomic_output(name: str, overwrite: bool | None) -> Iterator[BinaryIO]:
    """Write to a private temporary file beside `name` and rename it into place on success.

    On any failure the temporary file is removed, so no partial output is ever left
    (`libpromptus.io.files.TemporaryOutput`). `-`/`pipe:` and tcp:// write live instead (`open_output`).
    """
    if is_stdout(name) or network.is_url(name):
        with open_output(name) as sink:
            yield sink
        return
    if Path(name).exists() and not overwrite:
        raise CommandError(f"{name}: already exists (use -y to overwrite)")
    with TemporaryOutput(name) as temporary, open(temporary.path, "wb") as handle:
        yield handle


def run(prog: str, main: Callable[[list[str]], int], argv: list[str] | None) -> int:
    """Run a command's `main`, turning every failure into one line and an exit code."""
    logging.basicConfig(format=f"{prog}: %(message)s", level=logging.INFO)
    try:
        return main(sys.argv[1:] if argv is None else argv)
    except InvalidDataError as err:
        message = f"invalid data: {err}"
    except (CommandError, ValueError) as err:
        message = str(err)
    except OSError as err:
        if isinstance(err, BrokenPipeError) and (err.filename is None or is_stdout(str(err.filename))):
            # The reader of our output went away (e.g. `| head`): stop quietly, like cat does.
            # A broken pipe that names a file (a worker's queue's, an output's) is an error like any other.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILURE
        message = f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except MemoryError:
        message = "out of memory"
    sys.stderr.write(f"{prog}: error: {message}\n")
    return EXIT_FAILURE


def set_log_level(name: str) -> None:
    logging.getLogger().setLevel(LOG_LEVELS[name])
