"""Running the evaluation: every codec at every bitrate, one JSON record per run, resumable.

A run encodes the clip, decodes the file, and measures every frame. Its record goes to
`OUT/runs/CODEC-RATE.json` and the file to `OUT/streams/CODEC-RATE.EXT`, both written
under a temporary name and renamed when complete. A run whose record exists and whose
`fingerprint` matches (the clip's frames, the codec and its settings, the target, the
metrics) is finished and is not redone; any other record is replaced.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..io.files import TemporaryOutput
from .clip import Clip
from .codecs import Codec
from .metrics import Metrics, mean_metrics

__all__ = ["bitrate_label", "run_all", "write_json"]

log = logging.getLogger("libpromptus")


def bitrate_label(bitrate: float) -> str:
    """225000 -> "225k", 1500000 -> "1500k", 90500 -> "90.5k"."""
    return f"{bitrate / 1000:g}k"


def write_json(path: Path, value) -> None:
    """Write `value` as JSON under a temporary name and rename it to `path`."""
    write_bytes(path, (json.dumps(value, indent=1, allow_nan=False) + "\n").encode())


def write_bytes(path: Path, data: bytes) -> None:
    with TemporaryOutput(path) as temporary:
        temporary.path.write_bytes(data)


def _fingerprint(clip_digest: str, codec: Codec, bitrate: float, metrics: Sequence[str]) -> str:
    identity = {"clip": clip_digest, "codec": codec.name, "settings": codec.settings, "target_bps": bitrate,
                "metrics": list(metrics)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _finished(path: Path, fingerprint: str) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == fingerprint else None


def run_all(clip: Clip, source: str, codecs: Sequence[Codec], bitrates: Sequence[float], out: Path,
            metrics: Metrics) -> list[dict]:
    """Every codec at every bitrate (codec by codec), reusing finished runs; the records in that order."""
    for codec in codecs:
        codec.check(clip)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "streams").mkdir(exist_ok=True)
    digest = clip.digest()
    total = len(codecs) * len(bitrates)
    records = []
    for codec in codecs:
        for bitrate in bitrates:
            key = f"{codec.name}-{bitrate_label(bitrate)}"
            path = out / "runs" / f"{key}.json"
            fingerprint = _fingerprint(digest, codec, bitrate, metrics.names)
            record = _finished(path, fingerprint)
            step = f"[{len(records) + 1}/{total}] {key}"
            if record is not None:
                log.info("%s: finished before, kept (%.1f kbit/s)", step, record["bitrate_bps"] / 1000)
            else:
                record = _run(clip, digest, source, codec, bitrate, out, key, metrics, step)
                record["fingerprint"] = fingerprint
                write_json(path, record)
            records.append(record)
    return records


def _run(clip: Clip, digest: str, source: str, codec: Codec, bitrate: float, out: Path, key: str, metrics: Metrics,
         step: str) -> dict:
    def progress(text: str) -> None:
        log.info("%s: %s", step, text)

    stream = out / "streams" / f"{key}{codec.extension}"
    log.info("%s: encoding %d frames %dx%d at %s", step, len(clip.frames), clip.width, clip.height,
             bitrate_label(bitrate))
    with TemporaryOutput(stream) as temporary:
        began = time.perf_counter()
        encoded = codec.encode(clip, bitrate, temporary.path, progress)
        encoded_at = time.perf_counter()
        decoded = codec.decode(temporary.path, progress)
        decoded_at = time.perf_counter()
        if len(decoded) != len(clip.frames):
            raise ValueError(f"{key}: {len(decoded)} frames decoded, {len(clip.frames)} encoded")
        frames = metrics.measure(clip.frames, decoded)
    seconds = float(clip.duration)
    record = {
        "codec": codec.name, "label": bitrate_label(bitrate), "target_bps": bitrate, "settings": codec.settings,
        "clip": {"source": source, "digest": digest, "frames": len(clip.frames), "width": clip.width,
                 "height": clip.height, "rate": str(clip.rate), "duration_s": seconds},
        "file": os.path.relpath(stream, out), "file_bytes": encoded.file_bytes,
        "payload_bytes": encoded.payload_bytes, "bitrate_bps": encoded.file_bytes * 8 / seconds,
        "payload_bitrate_bps": encoded.payload_bytes * 8 / seconds, "details": encoded.details,
        "encode_s": round(encoded_at - began, 3), "decode_s": round(decoded_at - encoded_at, 3),
        "metrics": list(metrics.names), "mean": mean_metrics(frames), "frames": frames,
    }
    mean_psnr = record["mean"]["psnr"]
    progress(f"{record['bitrate_bps'] / 1000:.1f} kbit/s (payload {record['payload_bitrate_bps'] / 1000:.1f}), "
             f"PSNR {'inf' if mean_psnr is None else f'{mean_psnr:.2f}'} dB, SSIM {record['mean']['ssim']:.4f}, "
             f"encode {record['encode_s']:.1f} s")
    return record
