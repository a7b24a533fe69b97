"""Shared pieces of the encoder tests (test_encoding*.py): the frame rate of their clips,
the options of a fast encode with the tiny model, and module fixtures for a work
directory and for the tiny generator with its latent encoder (loaded once per module).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from libpromptus.models import load_generator, load_latent_encoder

RATE = 30


def quick(**changes) -> dict:
    """Options of a fast encode with the tiny model (no fitting and, with a bitrate, the byte
    model's decisions instead of trial encodes, unless asked; tests/test_rdo.py has the trials)."""
    options = {"model": "tiny", "iterations": 0, "first_iterations": 0, "perceptual": "none", "decisions": "formula"}
    options.update(changes)
    return options


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("encoding")


@pytest.fixture(scope="module")
def tiny():
    """The tiny generator and its latent encoder, loaded once."""
    return load_generator("tiny"), load_latent_encoder("tiny")
