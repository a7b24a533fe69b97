"""A description of a `.pmt` file as plain data: what `pmtprobe` prints.

The schema is documented in README.md ("pmtprobe output"). Frame indices are display
indices in the whole file (streams of a concatenated file follow each other).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from .framing import VERSION_MAJOR
from .reader import ReadUnit, Stream
from .units import SceneStart, UnitType


def describe(streams: list[Stream], size_bytes: int, *, show_units: bool = False) -> dict[str, Any]:
    """The probe report of a file made of `streams` and `size_bytes` long."""
    first = streams[0].header
    frame_count = sum(s.frame_count for s in streams)
    duration = Fraction(frame_count * first.fps_den, first.fps_num)
    report: dict[str, Any] = {
        "format": {
            "version": f"{VERSION_MAJOR}.{max(s.minor for s in streams)}",
            "streams": len(streams),
            "width": first.width,
            "height": first.height,
            "coded_width": first.coded_width,
            "coded_height": first.coded_height,
            "fps": first.fps,
            "frame_count": frame_count,
            "duration_s": float(duration),
            "size_bytes": size_bytes,
            "bitrate_bps": round(size_bytes * 8 / duration) if duration else 0,
        },
        "model": {"name": first.model_name, "hash": first.model_hash.hex()},
        "generation": {
            "latent_shape": list(first.latent_shape),
            "conditioning_shape": [first.cond_tokens, first.cond_dim],
            "noise": {"algorithm": first.noise_algorithm.name.lower(), "seed": first.noise_seed},
            "prev_weight": first.prev_weight,
            "noise_weight": first.noise_weight,
            "timestep": first.timestep,
            "alpha_bar": first.alpha_bar,
            "prediction_type": first.prediction_type.name.lower(),
        },
        "colour": {
            "primaries": first.colour_primaries,
            "transfer": first.transfer_characteristics,
            "matrix": first.matrix_coefficients,
            "full_range": first.full_range,
        },
        "metadata": {k: v for s in streams for k, v in s.metadata},
        "scenes": [],
        "keyframes": [],
    }
    for stream_number, stream in enumerate(streams):
        for scene in stream.scenes:
            scene_number = len(report["scenes"])
            start = scene.start.unit
            lost = not isinstance(start, SceneStart)          # a LostSceneStart of a repaired stream
            report["scenes"].append({
                "index": scene_number,
                "stream": stream_number,
                "first_frame": stream.first_frame + scene.first_frame,
                "last_frame": stream.first_frame + scene.last_frame,
                "scene_cut": scene.cut is not None,
                "latent_codec": None if lost else start.latent_codec.name.lower(),
                "coding": None if lost else start.coding.name.lower(),
                "bytes": scene.start.size,
            })
            for item in scene.keyframes:
                report["keyframes"].append({
                    "frame_index": stream.first_frame + item.unit.frame_index,
                    "scene": scene_number,
                    "rank": item.unit.rank,
                    "coding": item.unit.coding.name.lower(),
                    "bytes": item.size,
                })
    if show_units:
        report["units"] = [_unit(item) for s in streams for item in [s.header_unit, *s.units[1:]]]
    return report


def _unit(item: ReadUnit) -> dict[str, Any]:
    try:
        name = UnitType(item.unit_type).name.lower()
    except ValueError:
        name = f"unknown_{item.unit_type}"
    return {"offset": item.offset, "type": name, "size": item.size, "stream": item.stream}


def format_text(report: dict[str, Any]) -> str:
    """A human-readable rendering of a probe report."""
    f, m = report["format"], report["model"]
    lines = [
        f"Promptus stream v{f['version']}, {f['streams']} stream(s): model {m['name']} "
        f"(hash {m['hash'][:16]}{'…' if m['hash'].strip('0') else ' unpinned'})",
        f"  {f['width']}x{f['height']} (coded {f['coded_width']}x{f['coded_height']}), {f['fps']} fps, "
        f"{f['frame_count']} frames, {f['duration_s']:.3f} s, {f['size_bytes']} bytes, {f['bitrate_bps']} bit/s",
    ]
    for s in report["scenes"]:
        latent = "lost" if s["latent_codec"] is None else f"{s['latent_codec']}/{s['coding']}"
        lines.append(f"  scene {s['index']}: frames {s['first_frame']}..{s['last_frame']}"
                     f"{' (cut)' if s['scene_cut'] else ''}, latent {latent}, {s['bytes']} bytes")
    for k in report["keyframes"]:
        lines.append(f"    keyframe {k['frame_index']}: rank {k['rank']}, {k['coding']}, {k['bytes']} bytes")
    for u in report.get("units", []):
        lines.append(f"  unit @{u['offset']}: {u['type']}, {u['size']} bytes")
    return "\n".join(lines)
