"""Checking a decoder against the suite: one verdict per stream, a summary, an exit status.

For a valid stream, tier 1 compares the md5 of the canonical conditioning (computed
from the stream, SPEC.md §8.2) with the expectation, and tier 2 decodes the stream with
the chosen engine and compares the frames with the reference frames: an equal md5
passes at once ("psnr inf dB"), otherwise the PSNR over the stream must reach the
expectation's threshold. Tier 2 needs the model the reference frames were made with;
with another model it is skipped, and the verdict says so. For an invalid stream the
reader must report exactly the expected error code.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..bitstream import InvalidDataError, read_streams
from .canonical import latent_md5, tier1_md5
from .frames import FrameDecoder, frames_md5, psnr, read_reference
from .suite import (
    InvalidExpectation,
    SuiteError,
    ValidExpectation,
    expectation,
    find_streams,
)


@dataclass(frozen=True)
class Verdict:
    """The result of checking one stream."""

    name: str
    passed: bool
    detail: str

    @property
    def line(self) -> str:
        """One report line, e.g. `PASS RANK_A_1 tier1 tier2 (psnr inf dB)`."""
        return f"{'PASS' if self.passed else 'FAIL'} {self.name} {self.detail}"


class Verifier:
    """Checks streams against their expectations with one decoder configuration.

    `model` is the generator tier 2 decodes with (None: the one the expectations name);
    `engine`, `device` and `precision` are pmtdec's options of the same names. The model
    is loaded at the first stream that needs it, once.
    """

    def __init__(self, *, model: str | None = None, engine: str = "auto", device: str = "auto",
                 precision: str = "auto") -> None:
        self.model = model
        self.engine = engine
        self.device = device
        self.precision = precision
        self._decoders: dict[str, FrameDecoder] = {}

    def check(self, stream: Path) -> Verdict:
        """The verdict on one `.pmt` file with its expectation beside it."""
        try:
            expected = expectation(stream)
        except SuiteError as err:
            return Verdict(stream.stem, False, str(err))
        if isinstance(expected, InvalidExpectation):
            return _check_invalid(stream, expected)
        return self._check_valid(stream, expected)

    def _check_valid(self, stream: Path, expected: ValidExpectation) -> Verdict:
        try:
            streams = read_streams(stream)
        except InvalidDataError as err:
            return Verdict(expected.name, False, f"a valid stream refused: {err}")
        failures: list[str] = []
        passes: list[str] = []
        got, got_latent = tier1_md5(streams), latent_md5(streams)
        if got == expected.tier1_md5 and got_latent == expected.latent_md5:
            passes.append("tier1")
        if got != expected.tier1_md5:
            failures.append(f"tier1: md5 {got}, expected {expected.tier1_md5}")
        if got_latent != expected.latent_md5:
            failures.append(f"tier1: latent_md5 {got_latent}, expected {expected.latent_md5}")
        model = self.model or expected.model
        if model != expected.model:
            passes.append(f"(tier2 skipped: the reference frames are for model {expected.model}, not {model})")
        else:
            passed, text = self._tier2(stream, streams, expected)
            (passes if passed else failures).append(text)
        if failures:
            return Verdict(expected.name, False, "; ".join(failures))
        return Verdict(expected.name, True, " ".join(passes))

    def _tier2(self, stream: Path, streams: list, expected: ValidExpectation) -> tuple[bool, str]:
        """(True, "tier2 (psnr X dB)") when the decoded frames pass, else (False, "tier2: why not")."""
        if expected.model not in self._decoders:
            self._decoders[expected.model] = FrameDecoder(expected.model, engine=self.engine, device=self.device,
                                                          precision=self.precision)
        try:
            frames = self._decoders[expected.model].decode(streams)
        except ValueError as err:
            return False, f"tier2: decoding failed: {err}"
        if frames_md5(frames) == expected.tier2_md5:
            return True, "tier2 (psnr inf dB)"
        try:
            reference = read_reference((stream.parent / expected.reference).read_bytes(), expected.width,
                                       expected.height)
            value = psnr(frames, reference)
        except (OSError, ValueError) as err:
            return False, f"tier2: {err}"
        if value >= expected.min_psnr_db:
            return True, f"tier2 (psnr {_decibels(value)} dB)"
        return False, f"tier2: psnr {_decibels(value)} dB, below {expected.min_psnr_db:g} dB"


def _check_invalid(stream: Path, expected: InvalidExpectation) -> Verdict:
    try:
        read_streams(stream)
    except InvalidDataError as err:
        if err.code == expected.code:
            return Verdict(expected.name, True, err.code)
        return Verdict(expected.name, False, f"reported {err}, expected {expected.code}")
    return Verdict(expected.name, False, f"accepted, expected {expected.code}")


def _decibels(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}"


def run(streams: list[Path], verifier: Verifier, report: Callable[[str], None] = print) -> int:
    """Check `streams`, report one line each and a summary; return the number of failures."""
    failed = 0
    for stream in streams:
        verdict = verifier.check(stream)
        failed += not verdict.passed
        report(verdict.line)
    report(f"{len(streams) - failed} passed, {failed} failed")
    return failed


def verify(paths: list[Path], *, model: str | None = None, engine: str = "auto", device: str = "auto",
           precision: str = "auto", threads: int = 1) -> int:
    """Check every stream of `paths` (folders and files), print the report; return the exit status.

    0 when every stream passes, 1 otherwise. `threads` sets torch's CPU threads for the
    whole process (the reference frames were decoded with 1), so this is for commands,
    not for library callers, who use `Verifier` and `run`. Bad paths raise `SuiteError`.
    """
    import torch

    if threads < 1:
        raise SuiteError(f"--threads {threads}: must be at least 1")
    streams = find_streams(paths)
    if not streams:
        raise SuiteError(f"no .pmt streams in {', '.join(map(str, paths))}")
    torch.set_num_threads(threads)
    verifier = Verifier(model=model, engine=engine, device=device, precision=precision)
    return 1 if run(streams, verifier, lambda line: print(line, flush=True)) else 0
