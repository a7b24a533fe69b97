"""The probe report of a stream that concealment repaired: a lost scene start is described as lost."""
from __future__ import annotations

import io

from conftest import SceneSpec, StreamSpec, build_stream
from libpromptus.bitstream import SceneStart, read_units
from libpromptus.bitstream.concealment import LostSceneStart, read_concealed
from libpromptus.bitstream.probe import describe, format_text


def test_a_lost_scene_start_is_probed_as_lost():
    built = build_stream(StreamSpec(scenes=(SceneSpec(gaps=(2,)), SceneSpec(gaps=(1,), cut=True))))
    start = [item for item in read_units(io.BytesIO(built.data)) if isinstance(item.unit, SceneStart)][1]
    damaged = bytearray(built.data)
    damaged[start.offset + 6] ^= 0x55               # a payload byte: the CRC fails, the size field survives
    streams, report = read_concealed(io.BytesIO(bytes(damaged)))
    assert isinstance(streams[0].scenes[1].start.unit, LostSceneStart) and report.frames == (3, 4)

    probe = describe(streams, len(damaged), show_units=True)
    assert probe["scenes"] == [
        {"index": 0, "stream": 0, "first_frame": 0, "last_frame": 2, "scene_cut": False, "latent_codec": "f32",
         "coding": "raw", "bytes": streams[0].scenes[0].start.size},
        {"index": 1, "stream": 0, "first_frame": 3, "last_frame": 4, "scene_cut": True, "latent_codec": None,
         "coding": None, "bytes": start.size},
    ]
    assert [k["frame_index"] for k in probe["keyframes"]] == [0, 2, 3, 4]
    assert f"  scene 1: frames 3..4 (cut), latent lost, {start.size} bytes" in format_text(probe).splitlines()
