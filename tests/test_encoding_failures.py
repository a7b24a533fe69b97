"""The encoder's failure handling: a failure mid-way leaves no output and keeps an
existing one intact, an existing output needs overwrite, and an input without frames
or a frame of the wrong shape is refused.
"""
from __future__ import annotations

from pathlib import Path

import encoding_helpers
import numpy as np
import pytest
from encoding_helpers import RATE, quick
from libpromptus.bitstream import read_streams
from libpromptus.engines import create_engine

import libpromptus.encoder.encoder as encoding_module
from libpromptus import encode
from libpromptus.encoder.losses import make_perceptual_loss
from libpromptus.io.samples import write_sample
from libpromptus.process.profiles import TINY

# the module fixtures of encoding_helpers (the tiny generator and latent encoder; a work directory)
tiny, workdir = encoding_helpers.tiny, encoding_helpers.workdir


# ---------------------------------------------------------------- failures


@pytest.fixture(scope="module")
def small_clip(workdir) -> Path:
    path = workdir / "small.y4m"
    write_sample(str(path), 12, 32, 32)
    return path


def _isolated(tmp_path: Path, small_clip: Path) -> Path:
    source = tmp_path / "in.y4m"
    source.write_bytes(small_clip.read_bytes())
    return source


@pytest.mark.parametrize("where", ["fit_keyframe", "_close_interval"])
def test_a_failure_mid_way_leaves_no_output(tmp_path, small_clip, monkeypatch, where):
    source = _isolated(tmp_path, small_clip)
    calls = [0]
    if where == "fit_keyframe":
        original = encoding_module.fit_keyframe

        def failing(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("injected failure")
            return original(*args, **kwargs)

        monkeypatch.setattr(encoding_module, "fit_keyframe", failing)
    else:
        original = encoding_module.Encoder._close_interval

        def failing(self):
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("injected failure")
            return original(self)

        monkeypatch.setattr(encoding_module.Encoder, "_close_interval", failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        encode(str(source), str(tmp_path / "out.pmt"), rank=1, interval=2, **quick())
    assert calls[0] == 3
    assert not (tmp_path / "out.pmt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"], "no partial or temporary file may be left"


def test_a_failure_keeps_an_existing_output_intact(tmp_path, small_clip, monkeypatch):
    source = _isolated(tmp_path, small_clip)
    (tmp_path / "out.pmt").write_bytes(b"the previous output")
    original = encoding_module.fit_keyframe
    calls = [0]

    def failing(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    monkeypatch.setattr(encoding_module, "fit_keyframe", failing)
    with pytest.raises(RuntimeError):
        encode(str(source), str(tmp_path / "out.pmt"), overwrite=True, rank=1, interval=4, **quick())
    assert (tmp_path / "out.pmt").read_bytes() == b"the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]


def test_an_existing_output_is_refused_without_overwrite(tmp_path, small_clip):
    source = _isolated(tmp_path, small_clip)
    output = tmp_path / "out.pmt"
    output.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        encode(str(source), str(output), rank=1, interval=4, **quick())
    assert output.read_bytes() == b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]
    result = encode(str(source), str(output), overwrite=True, rank=1, interval=4, **quick())
    assert output.stat().st_size == result.bytes
    read_streams(output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m", "out.pmt"]


def test_an_input_without_frames_is_an_error_and_leaves_no_output(tmp_path, small_clip):
    source = _isolated(tmp_path, small_clip)
    with pytest.raises(ValueError):
        encode(str(source), str(tmp_path / "out.pmt"), rank=1, interval=4, **quick(max_frames=0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.y4m"]


def test_a_frame_of_the_wrong_shape_is_refused(tiny):
    """Encoder.push checks every frame against the header."""
    import io

    from libpromptus.bitstream import StreamWriter

    from libpromptus.encoder.encoder import Encoder, EncoderSettings

    generator, latent_encoder = tiny
    header = TINY.sequence_header(width=32, height=32, fps_num=RATE, fps_den=1, frame_count=0)
    engine = create_engine("torch", generator, header, device="cpu")
    encoder = Encoder(StreamWriter(io.BytesIO(), header), engine, latent_encoder, make_perceptual_loss("none"),
                      EncoderSettings(rank=1, interval=2, first_iterations=0, iterations=0))
    with pytest.raises(ValueError):
        encoder.push(np.zeros((32, 16, 3), np.uint8))
    with pytest.raises(ValueError):
        encoder.push(np.zeros((32, 32, 3), np.float32))
