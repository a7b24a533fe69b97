"""What every benchmark's JSON records about where and when it ran."""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from pathlib import Path

import torch


def environment(benchmark: str, settings: dict, device: str = "cpu") -> dict:
    """The common head of a benchmark result: name, date, device, platform, versions, settings."""
    names = ("torch", "diffusers", "av", "libpromptus")
    return {
        "benchmark": benchmark,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "versions": {name: importlib.metadata.version(name) for name in names},
        "settings": settings,
    }


def report(result: dict, out: Path | None) -> None:
    """Print a benchmark's JSON, and write it to `out` when given."""
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
    print(text)
