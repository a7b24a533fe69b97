"""Shared pieces of the model tests (test_models*.py): the shipped tiny model's paths and
manifest, the autouse fixture `offline` (HF_HUB_OFFLINE=1 and sockets blocked, so
that any network attempt fails the test instead of silently downloading), the module
fixture `tiny`, the shipped tensors, and the check that an error is one line.

Import it after the test module's skips for torch, diffusers and safetensors.
"""
from __future__ import annotations

import json
import socket

import pytest
import torch
from safetensors.torch import load_file

from libpromptus.models import Generator, load_generator, locations

TINY_DIR = locations.TINY_DIR
MANIFEST = json.loads((TINY_DIR / "MANIFEST.json").read_text())
TINY_UNET_CONFIG = TINY_DIR / "unet" / "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 and no sockets: a network attempt raises, and fails the test even
    if the library swallowed the exception."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return load_generator("tiny")


def tiny_state(kind: str) -> dict[str, torch.Tensor]:
    return load_file(str(TINY_DIR / kind / WEIGHTS))


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    return message
