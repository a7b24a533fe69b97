"""The codecs `pmteval --codecs` knows, by name."""
from __future__ import annotations

from .baselines import AV1, VP9, X264, X265
from .codecs import Codec
from .promptus import PromptusCodec

__all__ = ["CODECS", "create_codec"]

CODECS = {"promptus": PromptusCodec, "x265": X265, "x264": X264, "av1": AV1, "vp9": VP9}


def create_codec(name: str, *, model: str | None = None, iterations: int | None = None,
                 first_iterations: int | None = None) -> Codec:
    """The codec called `name`; the Promptus options go to Promptus only."""
    if name not in CODECS:
        raise ValueError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
    if name == "promptus":
        return PromptusCodec(model, iterations, first_iterations)
    return CODECS[name]()
