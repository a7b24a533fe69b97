"""Procedural video: seeded random clips of moving shapes over gradients, with scene cuts.

The project's own data. It trains the `tiny` model (`libpromptus.models.train_tiny`)
and, with other seeds, gives the held-out clips its benchmarks and tests measure on,
so nothing depends on footage that cannot be shipped. A clip is a few scenes; each
scene has a background (a two-colour linear gradient at a random angle with a slow
sinusoidal ripple that drifts) and one to four shapes (discs, rectangles, soft blobs)
of random colours moving on straight lines or circles. Cuts change everything.

Deterministic from the seed on every machine: all randomness comes from numpy's
legacy `RandomState`, whose streams numpy keeps frozen, and the drawing is float32
arithmetic with no platform-dependent calls.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Shape:
    kind: int                    # 0 disc, 1 rectangle, 2 soft blob
    colour: np.ndarray           # float32 [3] in [0, 1]
    radius: float                # fraction of min(width, height)
    aspect: float                # rectangle half-height / half-width
    start: np.ndarray            # centre at t = 0, fractions of (width, height)
    velocity: np.ndarray         # fractions per frame
    orbit: float                 # radius of a circular wobble, fraction of the frame
    orbit_speed: float           # radians per frame


@dataclass(frozen=True)
class _Scene:
    colours: np.ndarray          # float32 [2, 3] gradient end colours
    angle: float
    ripple: float                # amplitude of the sinusoidal ripple
    ripple_freq: float           # cycles across the frame
    ripple_speed: float          # radians per frame
    shapes: tuple[_Shape, ...]


def _random_scene(rng: np.random.RandomState) -> _Scene:
    colours = rng.uniform(0.0, 1.0, (2, 3)).astype(np.float32)
    shapes = []
    for _ in range(rng.randint(1, 5)):
        shapes.append(_Shape(
            kind=int(rng.randint(0, 3)),
            colour=rng.uniform(0.0, 1.0, 3).astype(np.float32),
            radius=float(rng.uniform(0.08, 0.3)),
            aspect=float(rng.uniform(0.4, 1.6)),
            start=rng.uniform(0.1, 0.9, 2),
            velocity=rng.uniform(-0.02, 0.02, 2),
            orbit=float(rng.uniform(0.0, 0.1)),
            orbit_speed=float(rng.uniform(-0.15, 0.15)),
        ))
    return _Scene(colours=colours, angle=float(rng.uniform(0, 2 * np.pi)), ripple=float(rng.uniform(0.0, 0.15)),
                  ripple_freq=float(rng.uniform(0.5, 3.0)), ripple_speed=float(rng.uniform(-0.2, 0.2)),
                  shapes=tuple(shapes))


def _draw(scene: _Scene, t: int, width: int, height: int) -> np.ndarray:
    """One frame of a scene at time t (frames since the scene began), float32 [H, W, 3] in [0, 1]."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / width, y / height
    along = (u - 0.5) * np.cos(scene.angle) + (v - 0.5) * np.sin(scene.angle) + 0.5
    ripple = scene.ripple * np.sin(2 * np.pi * scene.ripple_freq * (u + 0.7 * v) + scene.ripple_speed * t)
    mix = np.clip(along + ripple, 0.0, 1.0)[..., None]
    image = (1 - mix) * scene.colours[0] + mix * scene.colours[1]
    size = float(min(width, height))
    for shape in scene.shapes:
        phase = shape.orbit_speed * t
        cx = (shape.start[0] + shape.velocity[0] * t + shape.orbit * np.cos(phase)) * width
        cy = (shape.start[1] + shape.velocity[1] * t + shape.orbit * np.sin(phase)) * height
        r = shape.radius * size
        if shape.kind == 0:        # disc, one-pixel anti-aliased edge
            distance = np.sqrt((x - cx) ** 2 + (y - cy) ** 2) - r
            alpha = np.clip(0.5 - distance, 0.0, 1.0)
        elif shape.kind == 1:      # rectangle
            dx = np.abs(x - cx) - r
            dy = np.abs(y - cy) - r * shape.aspect
            alpha = np.clip(0.5 - np.maximum(dx, dy), 0.0, 1.0)
        else:                      # soft blob: a Gaussian bump
            alpha = np.exp(-((x - cx) ** 2 + ((y - cy) / shape.aspect) ** 2) / (2 * (0.6 * r) ** 2))
        image = image * (1 - alpha[..., None]) + shape.colour * alpha[..., None]
    return image


def random_clip(seed: int, frames: int, width: int, height: int, *, min_scene: int = 8,
                max_scene: int = 40) -> tuple[list[np.ndarray], list[int]]:
    """(RGB uint8 frames, first frame of each scene) of the procedural clip `seed`."""
    if frames < 1 or width < 1 or height < 1:
        raise ValueError("a clip needs at least one frame of at least one pixel")
    rng = np.random.RandomState(seed)
    out: list[np.ndarray] = []
    starts: list[int] = []
    while len(out) < frames:
        starts.append(len(out))
        scene = _random_scene(rng)
        length = int(rng.randint(min_scene, max_scene + 1))
        for t in range(min(length, frames - len(out))):
            out.append(np.clip(_draw(scene, t, width, height) * 255 + 0.5, 0, 255).astype(np.uint8))
    return out, starts


def still_then_moving_clip(seed: int, frames: int, width: int, height: int, *, still: int,
                           speed: float = 4.0) -> list[np.ndarray]:
    """RGB uint8 frames of one scene of clip `seed` that holds still for its first `still`
    frames and then moves `speed` times as fast as `random_clip`'s scenes: content whose
    keyframes belong where it moves (adaptive keyframe placement's test clip)."""
    if not 0 <= still <= frames:
        raise ValueError("still must be between 0 and the number of frames")
    scene = _random_scene(np.random.RandomState(seed))
    times = [0.0] * still + [speed * (n + 1) for n in range(frames - still)]
    return [np.clip(_draw(scene, t, width, height) * 255 + 0.5, 0, 255).astype(np.uint8) for t in times]

