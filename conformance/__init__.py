"""The `.pmt` conformance suite and its runner (SPEC.md, Annex B).

`streams/` holds the suite: valid streams with their expectations (`NAME.json`: the
tier-1 md5 of the canonical conditioning, the tier-2 md5 of the frames the reference
engine decodes with the tiny model, the reference frames and a PSNR threshold) and
invalid streams with the error code a decoder must report (`NAME.res`), plus a
SHA256SUMS manifest. `python -m libpromptus.conformance [DIR]` checks a decoder against
it (`runner`), `python -m libpromptus.conformance.generate` rebuilds it from its seeds.
"""
from importlib import resources
from pathlib import Path


def suite_dir() -> Path:
    """The installed suite: the `streams` folder of this package."""
    return Path(str(resources.files(__name__).joinpath("streams")))
