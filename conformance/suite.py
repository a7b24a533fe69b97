"""The suite's files (SPEC.md Annex B): what lies beside each stream, and the manifest.

A suite folder holds `valid/` and `invalid/`. Beside each valid `NAME.pmt` lie
`NAME.json` (its description and expectations: the tier-1 md5 of the canonical
conditioning, and for tier 2 the model, the md5 of the reference frames, the reference
frames' file `NAME.rgb` and the PSNR other decoders must reach) and `NAME.rgb`; beside
each invalid `NAME.pmt` lies `NAME.res`, whose first line is the SPEC.md §11 error code
and whose second line, after "# ", says what is wrong. `SHA256SUMS` lists the sha256 of
every other file in `sha256sum` format, paths relative to the suite folder.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..bitstream import ERROR_CODES
from ..errors import PromptusError

FORMAT = "libpromptus-conformance/1"
VALID_DIR = "valid"
INVALID_DIR = "invalid"
MANIFEST = "SHA256SUMS"
#: Tier-2 threshold of every stream: the PSNR (dB, over the whole stream) another engine,
#: device or precision must reach against the reference frames (SPEC.md Annex B).
MIN_PSNR_DB = 45.0


class SuiteError(PromptusError, ValueError):
    """A suite file is missing or malformed."""


@dataclass(frozen=True)
class ValidExpectation:
    """What a decoder must produce for a valid stream (`NAME.json`)."""

    name: str
    description: str
    frames: int
    width: int
    height: int
    tier1_md5: str
    latent_md5: str              # tier 1's first-frame latents (SPEC.md B.3)
    model: str
    model_hash: str
    tier2_md5: str
    reference: str               # the reference frames' file, beside the stream
    min_psnr_db: float

    def to_json(self) -> str:
        """The `NAME.json` text (stable key order, one trailing newline)."""
        return json.dumps({
            "format": FORMAT, "name": self.name, "description": self.description,
            "frames": self.frames, "width": self.width, "height": self.height,
            "tier1": {"md5": self.tier1_md5, "latent_md5": self.latent_md5},
            "tier2": {"model": self.model, "model_hash": self.model_hash, "md5": self.tier2_md5,
                      "reference": self.reference, "min_psnr_db": self.min_psnr_db},
        }, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ValidExpectation:
        try:
            data = json.loads(text)
            if data["format"] != FORMAT:
                raise SuiteError(f"format {data['format']!r}, not {FORMAT!r}")
            tier1, tier2 = data["tier1"], data["tier2"]
            return cls(str(data["name"]), str(data["description"]), int(data["frames"]), int(data["width"]),
                       int(data["height"]), str(tier1["md5"]), str(tier1["latent_md5"]), str(tier2["model"]),
                       str(tier2["model_hash"]),
                       str(tier2["md5"]), str(tier2["reference"]), float(tier2["min_psnr_db"]))
        except (ValueError, KeyError, TypeError) as err:
            raise SuiteError(f"malformed expectation: {err}") from None


@dataclass(frozen=True)
class InvalidExpectation:
    """The error a decoder must report for an invalid stream (`NAME.res`)."""

    name: str
    code: str
    description: str

    def to_res(self) -> str:
        return f"{self.code}\n# {self.description}\n"

    @classmethod
    def from_res(cls, name: str, text: str) -> InvalidExpectation:
        lines = text.splitlines()
        code = lines[0].strip() if lines else ""
        if code not in ERROR_CODES:
            raise SuiteError(f"{name}.res names {code!r}, not an error code of SPEC.md §11")
        description = lines[1].removeprefix("# ") if len(lines) > 1 else ""
        return cls(name, code, description)


Expectation = ValidExpectation | InvalidExpectation


def expectation(stream: Path) -> Expectation:
    """The expectation beside a `.pmt` stream: `NAME.json` or `NAME.res`."""
    valid, invalid = stream.with_suffix(".json"), stream.with_suffix(".res")
    if valid.is_file():
        expected = ValidExpectation.from_json(valid.read_text(encoding="utf-8"))
        if expected.name != stream.stem:
            raise SuiteError(f"{valid.name} describes {expected.name}, not {stream.stem}")
        return expected
    if invalid.is_file():
        return InvalidExpectation.from_res(stream.stem, invalid.read_text(encoding="utf-8"))
    raise SuiteError(f"{stream}: no conformance expectation beside it ({valid.name} or {invalid.name})")


def find_streams(paths: Iterable[Path]) -> list[Path]:
    """The `.pmt` files of the given files and folders (folders searched recursively, sorted)."""
    streams: list[Path] = []
    for path in paths:
        if path.is_dir():
            streams += sorted(path.rglob("*.pmt"))
        elif path.is_file():
            streams.append(path)
        else:
            raise SuiteError(f"{path}: no such file or directory")
    return streams


def manifest_text(directory: Path) -> str:
    """The `SHA256SUMS` of a suite folder: every file but the manifest, sorted by path."""
    lines = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(directory).as_posix()}\n")
    return "".join(lines)

