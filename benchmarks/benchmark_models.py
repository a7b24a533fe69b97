"""The generators the speed benchmarks run: the shipped `tiny` model, SD-Turbo's full
architecture with seeded random weights (`sd-turbo-random`, libpromptus.models.random_weights)
or SD-Turbo itself. Speed does not depend on the weights, so `sd-turbo-random` measures
SD-Turbo's speed on machines without its weights.
"""
from __future__ import annotations

from libpromptus.models import Generator, load_generator

NAMES = ("tiny", "sd-turbo-random", "sd-turbo")


def benchmark_generator(name: str) -> Generator:
    """`tiny`, `sd-turbo-random` or `sd-turbo` (real weights, when installed)."""
    return load_generator(name)
