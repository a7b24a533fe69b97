"""A procedural sample clip for demos and tests: `python -m libpromptus.io.samples OUT.y4m`.

Moving coloured shapes over a gradient, with a scene cut two thirds in (the second
scene is another palette and layout), written as lossless y4m (4:4:4) through PyAV.
Deterministic: the same arguments give the same file.
"""
from __future__ import annotations

import argparse
from fractions import Fraction

import numpy as np


def sample_frames(frames: int = 48, width: int = 128, height: int = 128) -> list[np.ndarray]:
    """RGB uint8 frames of the sample clip."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cut = (2 * frames) // 3
    out = []
    for t in range(frames):
        second = t >= cut
        phase = (t - cut if second else t) / max(frames, 1)
        base = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / (width + height))], -1)
        if second:
            base = base[..., ::-1] * 0.8 + 0.1
        cx = width * (0.25 + 0.5 * phase)
        cy = height * (0.5 + 0.25 * np.sin(2 * np.pi * phase))
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < (min(width, height) * 0.18) ** 2
        colour = np.array([0.9, 0.2, 0.1] if not second else [0.1, 0.3, 0.9], dtype=np.float32)
        image = np.where(disc[..., None], colour, base)
        out.append(np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8))
    return out


def write_y4m(path: str, frames: list[np.ndarray], rate: int = 30) -> None:
    """Write RGB uint8 frames to `path` as lossless y4m (4:4:4)."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(path, "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=Fraction(rate))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_sample(path: str, frames: int = 48, width: int = 128, height: int = 128, rate: int = 30) -> None:
    """Write the sample clip to `path` (.y4m, lossless 4:4:4)."""
    write_y4m(path, sample_frames(frames, width, height), rate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libpromptus.io.samples", description=__doc__.splitlines()[0])
    parser.add_argument("output", help="output .y4m")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("-s", dest="size", default="128x128", help="WxH (default 128x128)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    write_sample(args.output, args.frames, width, height)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
