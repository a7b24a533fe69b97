"""The names that mean a standard stream instead of a file, as FFmpeg spells them.

`-` and `pipe:` are standard input where a tool reads and standard output where it
writes; `pipe:0` is always standard input, `pipe:1` standard output.
"""
from __future__ import annotations

STDIN_NAMES = ("-", "pipe:", "pipe:0")
STDOUT_NAMES = ("-", "pipe:", "pipe:1")


def is_stdin(name: str) -> bool:
    """`name` is an input that means standard input."""
    return name in STDIN_NAMES


def is_stdout(name: str) -> bool:
    """`name` is an output that means standard output."""
    return name in STDOUT_NAMES
