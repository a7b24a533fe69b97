"""The TensorRT engine: the two ONNX graphs built into fp16 TensorRT engines, on CUDA.

Per static shape (batch bucket, resolution) the graphs are exported (`onnx_export`),
built with the FP16 flag (or BF16 for `--precision bf16`) and serialised into an engine
cache, `$PROMPTUS_TRT_CACHE` (default `~/.cache/libpromptus/tensorrt`), under a key of
the model identity, the GPU, the TensorRT version, the shape and the precision, so that
a build (minutes for SD-Turbo) happens once per machine. Inference binds torch CUDA
tensors by address and runs on torch's current stream (no separate CUDA bindings
needed). Needs `pip install libpromptus[tensorrt]` and an NVIDIA GPU; without them
`create_engine("tensorrt")` raises `EngineUnavailableError`.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..bitstream import SequenceHeader
from ..process.denoise import to_uint8
from .base import EngineUnavailableError, Generation
from .buckets import bucket, pad_batch
from .onnx_export import export_graphs
from .torch_engine import pick_device

if TYPE_CHECKING:
    from ..models import Generator


def cache_folder() -> Path:
    return Path(os.environ.get("PROMPTUS_TRT_CACHE", Path.home() / ".cache" / "libpromptus" / "tensorrt"))


def cache_key(identity: bytes, gpu: str, trt_version: str, header: SequenceHeader, batch: int,
              precision: str) -> str:
    """The name of a built engine pair: everything the plan depends on, hashed."""
    parts = [identity.hex(), gpu, trt_version, precision, str(batch), *map(str, header.latent_shape),
             str(header.cond_tokens), str(header.cond_dim), str(header.timestep), repr(header.alpha_bar),
             str(int(header.prediction_type))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise EngineUnavailableError("engine tensorrt needs TensorRT: pip install 'libpromptus[tensorrt]'") from exc
    return tensorrt


class _Plan:
    """One deserialised TensorRT engine with its execution context."""

    def __init__(self, trt, data: bytes) -> None:
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(data)
        self._context = self._engine.create_execution_context()

    def __call__(self, inputs: dict[str, torch.Tensor], output: str, device: torch.device) -> torch.Tensor:
        """Run on torch's current stream; `inputs` are contiguous float32 CUDA tensors, kept
        alive by the caller until the stream has run."""
        for name, tensor in inputs.items():
            if not tensor.is_contiguous():
                raise ValueError(f"TensorRT input {name} must be contiguous")
            self._context.set_tensor_address(name, tensor.data_ptr())
        shape = tuple(self._engine.get_tensor_shape(output))
        result = torch.empty(shape, dtype=torch.float32, device=device)
        self._context.set_tensor_address(output, result.data_ptr())
        if not self._context.execute_async_v3(torch.cuda.current_stream(device).cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return result


class TensorRTEngine:
    """Generates frames with TensorRT engines built from the ONNX export of the generator."""

    name = "tensorrt"

    def __init__(self, generator: "Generator", header: SequenceHeader, *, device: str = "auto",
                 precision: str = "auto") -> None:
        self._trt = _tensorrt()
        self.device = pick_device(device)
        if self.device.type != "cuda":
            raise EngineUnavailableError("engine tensorrt needs an NVIDIA GPU (CUDA); use --engine torch")
        if precision not in ("auto", "fp16", "bf16", "fp32"):
            raise ValueError(f"precision {precision!r}: choose auto, fp32, fp16 or bf16")
        self.precision = "fp16" if precision == "auto" else precision
        self._generator = generator
        self._header = header
        self._plans: dict[int, tuple[_Plan, _Plan]] = {}

    def _plans_for(self, batch: int) -> tuple[_Plan, _Plan]:
        if batch not in self._plans:
            key = cache_key(self._generator.identity(), torch.cuda.get_device_name(self.device),
                            self._trt.__version__, self._header, batch, self.precision)
            folder = cache_folder()
            paths = [folder / f"{key}-{part}.plan" for part in ("step", "decoder")]
            if not all(path.exists() for path in paths):
                self._build(batch, paths)
            self._plans[batch] = tuple(_Plan(self._trt, path.read_bytes()) for path in paths)
        return self._plans[batch]

    def _build(self, batch: int, paths: list[Path]) -> None:
        trt = self._trt
        logger = trt.Logger(trt.Logger.WARNING)
        with tempfile.TemporaryDirectory() as tmp:
            graphs = export_graphs(self._generator, self._header, Path(tmp), batch)
            for source, target in zip((graphs.step, graphs.decoder), paths):
                builder = trt.Builder(logger)
                network = builder.create_network(0)
                parser = trt.OnnxParser(network, logger)
                if not parser.parse_from_file(str(source)):
                    errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                    raise RuntimeError(f"TensorRT could not parse {source.name}: {errors}")
                config = builder.create_builder_config()
                if self.precision == "fp16":
                    config.set_flag(trt.BuilderFlag.FP16)
                elif self.precision == "bf16":
                    config.set_flag(trt.BuilderFlag.BF16)
                plan = builder.build_serialized_network(network, config)
                if plan is None:
                    raise RuntimeError(f"TensorRT could not build {source.name}")
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_suffix(".partial")
                partial.write_bytes(bytes(plan))
                partial.replace(target)

    def forward(self, latents: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """TensorRT plans run inference only: fitting prompts needs gradients (the torch engine)."""
        raise EngineUnavailableError("the TensorRT engine runs inference only; encode with the torch engine")

    @torch.inference_mode()
    def generate(self, latents: torch.Tensor, prompts: torch.Tensor) -> Generation:
        count = latents.shape[0]
        size = bucket(count)
        step, decoder = self._plans_for(size)
        z = pad_batch(latents.to(self.device, torch.float32), size).contiguous()
        c = pad_batch(prompts.to(self.device, torch.float32), size).contiguous()
        x0 = step({"latents": z, "prompts": c}, "x0", self.device)
        image = decoder({"x0": x0}, "image", self.device)
        pixels = to_uint8(image[:count]).permute(0, 2, 3, 1).contiguous().cpu()
        return Generation(latents=x0[:count].clone(), images=pixels)
