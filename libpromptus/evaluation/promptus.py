"""Promptus itself as an evaluated codec: `libpromptus.api.encode`, then `libpromptus.open(...).decode`.

The clip's frames are handed to the encoder losslessly, as a temporary PNG sequence read
at the clip's rate, so Promptus sees exactly the frames the baselines see. The encoder's
own rate control (`-b:v`) makes the whole `.pmt` file land on the bitrate; the payload is
the scene and keyframe units (first-frame latents and factors), without the sequence
header, metadata, index and end-of-stream units.
"""
from __future__ import annotations

import shutil
import tempfile
from functools import cached_property
from pathlib import Path

import numpy as np

from ..bitstream import UnitType
from .clip import Clip
from .codecs import Codec, Encoded, Progress

__all__ = ["PromptusCodec", "write_images"]

_PAYLOAD_UNITS = {UnitType.SCENE_START, UnitType.SCENE_CUT, UnitType.KEYFRAME}


def write_images(clip: Clip, folder: Path) -> str:
    """Write the clip's frames losslessly as `folder/%05d.png`; return that pattern (the
    encoder reads it at `clip.rate`)."""
    import av

    pattern = str(folder / "%05d.png")
    with av.open(pattern, "w", format="image2") as sequence:
        stream = sequence.add_stream("png", rate=clip.rate)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "rgb24"
        for index, image in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            sequence.mux(stream.encode(frame))
        sequence.mux(stream.encode(None))
    return pattern


class PromptusCodec(Codec):
    """Promptus with a chosen generator and iteration budget (None: the model's defaults)."""

    name, extension = "promptus", ".pmt"

    def __init__(self, model: str | None = None, iterations: int | None = None,
                 first_iterations: int | None = None) -> None:
        self.model = model
        self.iterations = iterations
        self.first_iterations = first_iterations

    @cached_property
    def settings(self) -> dict:
        """The model by name and weights' hash (loading it, once), the budgets, the library version."""
        from .. import __version__
        from ..models import load_generator

        generator = load_generator(self.model)
        return {"model": generator.name, "model_hash": generator.identity().hex(), "iterations": self.iterations,
                "first_iterations": self.first_iterations, "libpromptus": __version__}

    def encode(self, clip: Clip, bitrate: float, path: Path, progress: Progress) -> Encoded:
        from ..api import open as open_stream
        from ..api import encode

        def on_iteration(keyframe: int, iteration: int, loss: float) -> None:
            if iteration % 25 == 0:
                progress(f"keyframe {keyframe} iteration {iteration}: loss {loss:.4f}")

        def on_keyframe(report) -> None:
            progress(f"keyframe {report.frame_index}: loss {report.loss:.4f}, PSNR {min(report.psnr):.2f} dB")

        with tempfile.TemporaryDirectory(prefix="pmteval-") as work:
            pattern = write_images(clip, Path(work))
            try:
                result = encode(pattern, str(path), overwrite=True, model=self.model, bitrate=bitrate,
                                iterations=self.iterations, first_iterations=self.first_iterations, rate=clip.rate,
                                on_iteration=on_iteration, on_keyframe=on_keyframe)
            except KeyboardInterrupt:
                # the encoder keeps its checkpoint folder for `pmtenc --resume`; nothing resumes it here
                shutil.rmtree(path.parent / f".{path.name}.resume", ignore_errors=True)
                raise
        with open_stream(path) as container:
            payload = sum(unit.size for unit in container.demux() if unit.unit_type in _PAYLOAD_UNITS)
        return Encoded(path.stat().st_size, payload, {"rank": result.rank, "interval": result.interval})

    def decode(self, path: Path, progress: Progress) -> list[np.ndarray]:
        from ..api import open as open_stream

        with open_stream(path) as container:
            return [frame.image for frame in container.decode(model=self.model)]
