"""ONNX export of the two engine graphs, for TensorRT (and for checking with onnxruntime).

`export_graphs` writes `step.onnx` (the network plus the denoising formula: float32
z [B, C, h, w] and c [B, T, D] in, float32 x0 out) and `decoder.onnx` (x0 in, image in
[-1, 1] out) for one static shape, exported in float32 on the CPU with torch's
`torch.export`-based exporter; TensorRT lowers them to fp16 when it builds its engine.
Needs the `onnx` and `onnxscript` packages (`pip install libpromptus[tensorrt]`).
"""
from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..bitstream import SequenceHeader
from .graphs import DenoisingStep, LatentDecoder

if TYPE_CHECKING:
    from ..models import Generator

OPSET = 18


@dataclass(frozen=True)
class ExportedGraphs:
    step: Path
    decoder: Path


def export_graphs(generator: "Generator", header: SequenceHeader, folder: Path, batch: int) -> ExportedGraphs:
    """Export both graphs for `batch` frames at the header's coded size into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    # torch's own `to`: diffusers' override warns about float32 modules on every cast
    unet = torch.nn.Module.to(copy.deepcopy(generator.unet), "cpu", torch.float32).eval()
    decoder = torch.nn.Module.to(copy.deepcopy(generator.decoder), "cpu", torch.float32).eval()
    channels, height, width = header.latent_shape
    latents = torch.zeros(batch, channels, height, width)
    prompts = torch.zeros(batch, header.cond_tokens, header.cond_dim)
    paths = ExportedGraphs(folder / "step.onnx", folder / "decoder.onnx")
    _export(DenoisingStep(unet, header), (latents, prompts), ["latents", "prompts"], ["x0"], paths.step)
    _export(LatentDecoder(decoder), (latents,), ["x0"], ["image"], paths.decoder)
    return paths


def _export(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str], path: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; say so before torch fails deep inside)
    except ImportError as exc:
        raise RuntimeError("ONNX export needs onnx and onnxscript: pip install 'libpromptus[tensorrt]'") from exc
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, input_names=inputs, output_names=outputs, opset_version=OPSET,
                                        dynamo=True, verbose=False)
        program.save(str(path))
    finally:
        quiet.setLevel(level)
