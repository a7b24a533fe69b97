"""SD-Turbo's path through pmtenc and pmtdec, on `sd-turbo-random` (SD-Turbo's
architecture with seeded random weights), so CI runs the real model's code where its
weights are absent.

At SD-Turbo's smallest size (64x64: blocks of 64 pixels), two frames, both keyframes
(-g 1), two fitting iterations each, in an environment where no SD-Turbo can be found.
One module fixture runs the CLIs one after the other (each process builds the
865M-parameter UNet, about 4 GB, so not two at once): the same encode twice, a decode
of the first with `--model sd-turbo-random`, and one without a model. The whole file
takes about 180 s of CPU time (measured on 2 cores: 6 minutes of wall time while other
work shared them; an encode alone took 23 s, a decode 16 s, on them when quieter).
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from decoding_helpers import empty_model_places
from libpromptus.bitstream import Keyframe, SceneStart, read_streams, read_units

from libpromptus.io.samples import sample_frames, write_y4m
from libpromptus.models import ModelNotFoundError, load_generator, load_latent_encoder
from libpromptus.models.random_weights import random_taesd
from libpromptus.process.profiles import SD_TURBO

#: SPEC.md §7 identity of sd-turbo-random (UNet seed 0, TAESD seed 1). It changes only
#: if torch's or diffusers' default initialisation (or the shipped configs) change; then
#: streams written before no longer decode with sd-turbo-random without --force-model.
EXPECTED_IDENTITY = "9a8bced310ebfc5c2f38de424dbb59ca72ec20beb738a42990e926f85908cfce"

SIZE = 64
FRAMES = 2
#: -threads 1: with two CPU threads, torch's reductions in SD-Turbo's architecture do not
#: always add in the same order, and a DCT8-latent encode of this clip gave two different
#: files in three runs (found 2026-12-06; one thread gave the same file every time)
ENCODE = ("--model", "sd-turbo-random", "--iterations", 2, "--first-iterations", 2, "-g", 1,
          "--perceptual", "ms-ssim", "-nostats", "-threads", 1)


def cli(module: str, *args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in {**os.environ, "PYTHONUNBUFFERED": "1", **env}.items() if v is not None}
    return subprocess.run([sys.executable, "-m", f"libpromptus.cli.{module}", *map(str, args)], capture_output=True,
                          cwd=cwd, env=environment, timeout=900, check=False)


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    return proc


@dataclass
class Runs:
    directory: Path
    first: subprocess.CompletedProcess
    second: subprocess.CompletedProcess
    decoded: subprocess.CompletedProcess
    default: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    d = tmp_path_factory.mktemp("sd-turbo-random")
    # the first two frames of a three-frame sample clip (its scene cut is at frame 2)
    write_y4m(str(d / "in.y4m"), sample_frames(3, SIZE, SIZE)[:FRAMES])
    env = empty_model_places(d / "env")
    first = cli("pmtenc", "-i", "in.y4m", *ENCODE, "first.pmt", cwd=d, env=env)
    second = cli("pmtenc", "-i", "in.y4m", *ENCODE, "second.pmt", cwd=d, env=env)
    decoded = cli("pmtdec", "-i", "first.pmt", "--model", "sd-turbo-random", "out.y4m", cwd=d, env=env)
    default = cli("pmtdec", "-i", "first.pmt", "default.y4m", cwd=d, env=env)
    return Runs(d, first, second, decoded, default)


def test_the_encode_is_deterministic(runs):
    succeeded(runs.first)
    succeeded(runs.second)
    assert (runs.directory / "first.pmt").read_bytes() == (runs.directory / "second.pmt").read_bytes()


def test_the_stream_names_sd_turbo_and_pins_the_random_weights(runs):
    succeeded(runs.first)
    path = runs.directory / "first.pmt"
    (stream,) = read_streams(path)
    header = stream.header
    assert header.model_name == "sd-turbo"
    assert header.model_hash.hex() == EXPECTED_IDENTITY
    assert (header.width, header.height, header.frame_count, header.size_multiple) == (SIZE, SIZE, FRAMES, 64)
    units = [u.unit for u in read_units(path)]
    assert [u.first_frame for u in units if isinstance(u, SceneStart)] == [0]
    assert [u.frame_index for u in units if isinstance(u, Keyframe)] == [0, 1]


def test_pmtdec_decodes_it_with_sd_turbo_random(runs):
    succeeded(runs.decoded)
    with av.open(str(runs.directory / "out.y4m")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == FRAMES
    assert all(f.shape == (SIZE, SIZE, 3) and f.dtype == np.uint8 for f in frames)


def test_pmtdec_without_a_model_looks_for_the_real_sd_turbo(runs):
    # the stream names sd-turbo: by default its (absent) real weights are looked for, which
    # would refuse the random weights' hash anyway
    stderr = runs.default.stderr.decode()
    assert runs.default.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    assert "sd-turbo" in stderr and "not found" in stderr, stderr
    assert not (runs.directory / "default.y4m").exists()


@pytest.fixture(scope="module")
def generator():
    # first needed after the CLI tests above: this process's 3.5 GB do not add to theirs
    state = torch.random.get_rng_state()
    generator = load_generator("sd-turbo-random")
    assert torch.equal(torch.random.get_rng_state(), state), "building it moved the caller's random state"
    return generator


def test_its_identity_is_pinned(generator):
    assert generator.name == "sd-turbo"
    assert generator.profile == SD_TURBO
    assert generator.identity().hex() == EXPECTED_IDENTITY
    assert sum(p.numel() for p in generator.unet.parameters()) == 865_910_724
    assert {p.dtype for p in generator.unet.parameters()} == {torch.float32}


def test_its_latent_encoder_is_the_same_seeded_taesd(generator):
    taesd = random_taesd().state_dict()
    encoder = load_latent_encoder("sd-turbo-random")
    assert encoder.kind == "taesd"
    for name, tensor in encoder.module.state_dict().items():
        assert torch.equal(tensor, taesd[name]), name
    for name, tensor in generator.decoder.state_dict().items():
        assert torch.equal(tensor, taesd[name]), name
    with pytest.raises(ModelNotFoundError, match="no SD VAE"):
        load_latent_encoder("sd-turbo-random", kind="vae")
