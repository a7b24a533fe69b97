"""Rebuild the conformance suite from its seeds: `python -m libpromptus.conformance.generate [--out DIR]`.

Writes `valid/` (streams, expectations, reference frames), `invalid/` (streams and
`.res` files) and `SHA256SUMS` into DIR (default: the package's own `streams/`, which
is the source tree in an editable install), replacing what `valid/` and `invalid/`
held. It checks every stream as it goes: each valid one must read back without error,
each invalid one must make the reader report exactly its error code, and the units of
the stream the invalid ones are made from must reassemble into the writer's very bytes
(so that each invalid stream differs from a valid one by its fault alone).

The tier-2 reference frames come from the reference engine (PyTorch, CPU, fp32) with
one intra-op thread: the thread count changes the order of some float sums, so fixing
it makes regeneration byte-identical on the same platform whatever its core count.
"""
from __future__ import annotations

import argparse
import io
import shutil
import sys
from pathlib import Path

from ..bitstream import InvalidDataError, read_streams
from . import suite_dir
from .assemble import assemble
from .canonical import latent_md5, tier1_md5
from .frames import FrameDecoder, frames_md5
from .invalid import INVALID, InvalidCase, base_stream, base_units
from .suite import (
    INVALID_DIR,
    MANIFEST,
    MIN_PSNR_DB,
    VALID_DIR,
    InvalidExpectation,
    ValidExpectation,
    manifest_text,
)
from .valid import VALID, ValidCase

REFERENCE_MODEL = "tiny"


def write_valid(case: ValidCase, folder: Path, decoder: FrameDecoder) -> int:
    """Write one valid stream, its expectation and its reference frames; return the stream's size."""
    data = case.build()
    streams = read_streams(io.BytesIO(data))
    frames = decoder.decode(streams)
    header = streams[0].header
    expected = ValidExpectation(
        name=case.name, description=case.description, frames=len(frames), width=header.width,
        height=header.height, tier1_md5=tier1_md5(streams), latent_md5=latent_md5(streams), model=REFERENCE_MODEL,
        model_hash=decoder.generator.identity().hex(), tier2_md5=frames_md5(frames),
        reference=f"{case.name}.rgb", min_psnr_db=MIN_PSNR_DB)
    (folder / f"{case.name}.pmt").write_bytes(data)
    (folder / f"{case.name}.rgb").write_bytes(frames.tobytes())
    (folder / f"{case.name}.json").write_text(expected.to_json(), encoding="utf-8")
    return len(data)


def write_invalid(case: InvalidCase, folder: Path) -> int:
    """Write one invalid stream and its `.res` after checking the reader's error; return its size."""
    data = case.build()
    try:
        read_streams(io.BytesIO(data))
    except InvalidDataError as err:
        if err.code != case.code:
            raise AssertionError(f"{case.name}: the reader reports {err}, not {case.code}") from None
    else:
        raise AssertionError(f"{case.name}: the reader accepts it, not {case.code}")
    (folder / f"{case.name}.pmt").write_bytes(data)
    (folder / f"{case.name}.res").write_text(InvalidExpectation(case.name, case.code, case.description).to_res(),
                                             encoding="utf-8")
    return len(data)


def generate(out: Path) -> tuple[int, int]:
    """Rebuild the whole suite in `out`; return the numbers of valid and invalid streams."""
    import torch

    names = [case.name for case in (*VALID, *INVALID)]
    if len(set(names)) != len(names):
        raise AssertionError("two streams of the suite share a name")
    valid, invalid = out / VALID_DIR, out / INVALID_DIR
    for folder in (valid, invalid):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decoder = FrameDecoder(REFERENCE_MODEL, engine="torch", device="cpu", precision="fp32")
        for case in VALID:
            write_valid(case, valid, decoder)
    finally:
        torch.set_num_threads(threads)
    if assemble(base_units()) != base_stream():
        raise AssertionError("the invalid streams' base does not reassemble into the writer's bytes")
    for case in INVALID:
        write_invalid(case, invalid)
    (out / MANIFEST).write_text(manifest_text(out), encoding="utf-8")
    return len(VALID), len(INVALID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libpromptus.conformance.generate",
                                     description="Rebuild the .pmt conformance suite from its seeds.")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write the suite (default: the package's streams/ folder)")
    args = parser.parse_args(argv)
    out = args.out or suite_dir()
    valid, invalid = generate(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{out}: {valid} valid and {invalid} invalid streams, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
