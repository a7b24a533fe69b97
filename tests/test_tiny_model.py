"""The trained `tiny` model: pinned by the registry, steerable by fitting, rebuilt by its recipe.

The fitting-gain test is the issue's promise in small: on a procedural clip the model
never saw in training, an encode with the default iteration budget decodes at least
3 dB closer to the source than the same encode with no fitting at all.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

import libpromptus
from libpromptus import encode
from libpromptus.io.samples import write_y4m
from libpromptus.models import load_generator, locations, train_tiny
from libpromptus.models.procedural import random_clip
from libpromptus.process.profiles import TINY
from libpromptus.process.quality import psnr

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((locations.TINY_DIR / "MANIFEST.json").read_text())


def annex_a_hash(model: str) -> str:
    """The `model_hash` SPEC.md Annex A registers for `model`."""
    row = next(line for line in (ROOT / "SPEC.md").read_text().splitlines() if line.startswith(f"| `{model}` |"))
    return re.search(r"`model_hash` ([0-9a-f]{64})", row).group(1)


def test_shipped_weights_hash_matches_the_registry():
    assert load_generator("tiny").identity().hex() == MANIFEST["identity"] == annex_a_hash("tiny")


def test_registry_row_declares_the_profile_constants():
    row = next(line for line in (ROOT / "SPEC.md").read_text().splitlines() if line.startswith("| `tiny` |"))
    assert f"`timestep` {TINY.timestep}" in row
    assert f"`prev_weight` {TINY.prev_weight}" in row and f"`noise_weight` {TINY.noise_weight}" in row


def test_manifest_records_the_recipe():
    training = MANIFEST["training"]
    assert MANIFEST["generator"] == "python -m libpromptus.models.train_tiny"
    assert training["seed"] == train_tiny.Recipe.seed
    assert training["ae_steps"] > 0 and training["gen_steps"] > 0


def test_procedural_clips_are_deterministic_and_have_cuts():
    frames, starts = random_clip(7, 50, 32, 24)
    again, starts_again = random_clip(7, 50, 32, 24)
    assert starts == starts_again and starts[0] == 0 and len(starts) >= 2
    assert all(a.tobytes() == b.tobytes() for a, b in zip(frames, again))
    assert frames[0].shape == (24, 32, 3) and frames[0].dtype == np.uint8
    digest = hashlib.md5(b"".join(f.tobytes() for f in frames)).hexdigest()
    other, _ = random_clip(8, 50, 32, 24)
    assert digest != hashlib.md5(b"".join(f.tobytes() for f in other)).hexdigest()
    with pytest.raises(ValueError):
        random_clip(7, 0, 32, 24)


def test_held_out_seeds_are_not_training_seeds():
    assert train_tiny.HELD_OUT_SEED >= train_tiny.Recipe.clips


def _decoded_psnr(stream: Path, source: list[np.ndarray]) -> float:
    frames = [f.image for f in libpromptus.open(stream).decode(model="tiny")]
    assert len(frames) == len(source)
    return float(np.mean([psnr(a, b) for a, b in zip(frames, source)]))


def test_fitting_gains_at_least_3_db_on_a_held_out_clip(tmp_path):
    source, _ = random_clip(train_tiny.HELD_OUT_SEED + 100, 12, 64, 64)
    clip = tmp_path / "clip.y4m"
    write_y4m(str(clip), source)
    # the byte model's rank and interval for both: trials would measure the two budgets apart
    fitted = encode(str(clip), str(tmp_path / "fitted.pmt"), model="tiny", bitrate=100_000, decisions="formula")
    unfitted = encode(str(clip), str(tmp_path / "unfitted.pmt"), model="tiny", bitrate=100_000, decisions="formula",
                      iterations=0, first_iterations=0)
    assert (fitted.rank, fitted.interval) == (unfitted.rank, unfitted.interval)
    gain = _decoded_psnr(tmp_path / "fitted.pmt", source) - _decoded_psnr(tmp_path / "unfitted.pmt", source)
    assert gain >= 3.0, gain


def test_training_recipe_runs_end_to_end(tmp_path):
    """Two steps of each stage on two clips: the script writes a loadable, manifest-checked model."""
    out = tmp_path / "tiny"
    assert train_tiny.main(["--out", str(out), "--ae-steps", "2", "--gen-steps", "2", "--clips", "2"]) == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["training"]["ae_steps"] == 2 and manifest["training"]["clips"] == 2
    generator = load_generator(str(out))
    assert generator.identity().hex() == manifest["identity"] != MANIFEST["identity"]
