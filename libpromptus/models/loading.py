"""Loading the generator models (offline only) into a `Generator`.

Every load is from local files: diffusers folders through `from_pretrained(...,
local_files_only=True, use_safetensors=True)` (never pickles), original single-file
checkpoints through `safetensors` and diffusers' own LDM-to-diffusers key converter
with a UNet config shipped in this package. Nothing is ever downloaded; a model that
is not on disk raises `ModelNotFoundError` with a one-line explanation.

Loaded models are float32 on the CPU, in eval mode, with `requires_grad` off; callers
move them (`Generator.to`). Every load is checked to be complete: a checkpoint with
missing, extra or misshaped weights is refused (diffusers itself only warns and leaves
missing weights uninitialised). `sd-turbo-random` is not loaded but built, from seeds
(`random_weights`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel
from diffusers.utils import is_accelerate_available

from ..errors import ModelIntegrityError
from ..process.profiles import PROFILES, GeneratorProfile
from .identity import model_identity
from .locations import (
    RANDOM_MODELS,
    SD_TURBO_FILE,
    SD_TURBO_UNET_CONFIG,
    TAESD_CONFIG,
    TINY_DIR,
    WEIGHTS_FP16_NAME,
    ModelNotFoundError,
    UnetSource,
    config_class,
    decoder_in,
    find_sd_turbo_unet,
    find_taesd,
    model_dir,
    original_taesd_files,
    registered_models,
    resolve_model,
    sd_turbo_howto,
    unet_in,
    weights_file,
)

log = logging.getLogger("libpromptus.models")

#: Prefix of the denoising network's tensors in original (LDM/SGM) single-file checkpoints.
LDM_UNET_PREFIX = "model.diffusion_model."
MANIFEST = "MANIFEST.json"

#: The UNet config of each registered model's architecture (for single files and for
#: telling which model a path holds).
ARCHITECTURES: dict[str, Path] = {"sd-turbo": SD_TURBO_UNET_CONFIG, "tiny": TINY_DIR / "unet" / "config.json"}
#: The config entries that tell the registered architectures apart.
ARCHITECTURE_KEYS = ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim")


@dataclass
class Generator:
    """A generator model: the denoising network and the latent decoder, with its profile."""

    name: str
    profile: GeneratorProfile
    unet: UNet2DConditionModel
    decoder: AutoencoderTiny
    #: where the weights were loaded from, for messages
    source: str = ""
    _identity: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def identity(self) -> bytes:
        """SPEC.md §7 identity of the weights (computed once, then cached)."""
        if self._identity is None:
            self._identity = model_identity(self.unet, self.decoder)
        return self._identity

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Generator:
        """Move both modules (in place); returns self."""
        for module in (self.unet, self.decoder):
            # torch's own `to`: diffusers' override only adds a spurious "modules that should be
            # kept in float32: []" warning for these (unquantized, not offloaded) models
            torch.nn.Module.to(module, device=device, dtype=dtype)
        return self


# ---------------------------------------------------------------- public entry point


def load_generator(spec: str | Path | None = None) -> Generator:
    """Load a generator: `spec` None -> $PROMPTUS_MODEL -> "sd-turbo"; a registered name or a path."""
    target = resolve_model(spec)
    if isinstance(target, Path):
        return load_path(target)
    if target == "tiny":
        if not (TINY_DIR / MANIFEST).is_file():
            raise ModelIntegrityError(f"model tiny: {TINY_DIR / MANIFEST} is missing: reinstall libpromptus")
        return load_path(TINY_DIR, expect="tiny")
    if target == "sd-turbo":
        return _load_sd_turbo()
    if target in RANDOM_MODELS:
        from .random_weights import load_random

        return load_random(target)
    raise ModelNotFoundError(f"model {target} has no loader (registered: {', '.join(registered_models())})")


# ---------------------------------------------------------------- the registered sd-turbo


def _load_sd_turbo() -> Generator:
    source = find_sd_turbo_unet()
    if source is None:
        raise ModelNotFoundError(f"model sd-turbo not found: {sd_turbo_howto()}")
    decoder_dir = find_taesd()
    if decoder_dir is None:
        raise ModelNotFoundError(_taesd_missing("sd-turbo"))
    return _assemble("sd-turbo", source, decoder_dir)


def _taesd_missing(name: str) -> str:
    original = original_taesd_files()
    note = (f" ({original[0].name} at {original[0].parent} is madebyollin's original layout, which diffusers "
            "cannot load: use the diffusers snapshot)" if original else "")
    return (f"model {name}: the TAESD decoder was not found{note}: download madebyollin/taesd once "
            f"(huggingface-cli download madebyollin/taesd) or put its diffusers files in {model_dir() / 'taesd'}")


# ---------------------------------------------------------------- explicit paths


def load_path(path: Path, *, expect: str | None = None) -> Generator:
    """Load a model from a path: a diffusers folder (`unet/` + `taesd/` or an AutoencoderTiny
    `vae/`), a folder holding `sd_turbo.safetensors`, or a single original `.safetensors`.

    Which registered model it is follows from a MANIFEST.json or the UNet's architecture;
    `expect` insists on one. A folder with MANIFEST.json must match it byte for byte.
    """
    path = Path(path)
    manifest = None
    if path.is_dir():
        manifest = verify_manifest(path)
        source = unet_in(path)
        if source is None and (path / "unet").is_dir():
            what = config_class(path / "unet")
            raise ModelNotFoundError(
                f"{path / 'unet'} is not a UNet2DConditionModel folder "
                f"({'config class ' + what if what != 'UNet2DConditionModel' else 'no diffusion_pytorch_model.safetensors'})")
        if source is None:
            raise ModelNotFoundError(
                f"{path} is not a model: expected a diffusers folder with unet/ (and taesd/), "
                f"a folder with {SD_TURBO_FILE}, or a .safetensors checkpoint")
        decoder_dir = decoder_in(path)
    elif path.is_file() and path.suffix == ".safetensors":
        source = UnetSource(path, single_file=True)
        decoder_dir = decoder_in(path.parent)
    else:
        raise ModelNotFoundError(
            f"{path} is not a model: expected a diffusers folder with unet/ or a .safetensors checkpoint "
            "(pickled .ckpt/.pth files are not loaded)")
    name = manifest["name"] if manifest and "name" in manifest else _architecture_of(source)
    if expect is not None and name != expect:
        raise ModelNotFoundError(f"{path} holds model {name}, not {expect}")
    if name not in PROFILES:
        raise ModelNotFoundError(f"{path} declares model {name!r}, which is not registered")
    if decoder_dir is None:
        decoder_dir = _default_decoder(name)
    generator = _assemble(name, source, decoder_dir)
    if manifest and manifest.get("identity") and generator.identity().hex() != manifest["identity"]:
        raise ModelIntegrityError(
            f"model {name} at {path}: the weights' identity differs from {MANIFEST} "
            f"({generator.identity().hex()[:16]}... != {manifest['identity'][:16]}...)")
    return generator


def _default_decoder(name: str) -> Path:
    if name == "tiny":
        return TINY_DIR / "vae"
    found = find_taesd()
    if found is None:
        raise ModelNotFoundError(_taesd_missing(name))
    return found


def _architecture_of(source: UnetSource) -> str:
    """The registered model whose UNet architecture the source has."""
    if source.single_file:
        config_file = _single_file_config(source.path)
        return next(n for n, f in ARCHITECTURES.items() if f == config_file)
    try:
        config = json.loads((source.path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{source.path / 'config.json'} is not a readable UNet config: {exc}") from None
    name = _match_architecture(config)
    if name is None:
        described = ", ".join(f"{k} {config.get(k)}" for k in ARCHITECTURE_KEYS)
        raise ModelNotFoundError(
            f"{source.path} holds a UNet of no registered model ({described}); "
            f"registered models are {', '.join(registered_models())}")
    return name


def _match_architecture(config: dict) -> str | None:
    for name, config_file in ARCHITECTURES.items():
        known = json.loads(config_file.read_text())
        if all(_norm(config.get(k)) == _norm(known.get(k)) for k in ARCHITECTURE_KEYS):
            return name
    return None


def _norm(value):
    return list(value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------- assembling a generator


def _assemble(name: str, source: UnetSource, decoder_dir: Path) -> Generator:
    profile = PROFILES[name]
    unet = load_unet_single_file(source.path) if source.single_file else load_unet_folder(source.path)
    decoder = load_decoder(decoder_dir)
    _check_profile(name, profile, unet, decoder, source.path)
    kind = "single file" if source.single_file else "diffusers"
    where = f"unet {source.path} ({kind}), decoder {decoder_dir}"
    log.info("loaded model %s: %s", name, where)
    return Generator(name=name, profile=profile, unet=unet, decoder=decoder, source=where)


def _check_profile(name: str, profile: GeneratorProfile, unet, decoder, path: Path) -> None:
    """The networks fit the profile's latent and conditioning shapes."""
    u, d = unet.config, decoder.config
    levels = len(u.block_out_channels) - 1
    upsampling = int(d.upsampling_scaling_factor) ** (len(d.num_decoder_blocks) - 1)
    problems = []
    if u.in_channels != profile.latent_channels or u.out_channels != profile.latent_channels:
        problems.append(f"UNet channels {u.in_channels}/{u.out_channels}, expected {profile.latent_channels}")
    if u.cross_attention_dim != profile.cond_dim:
        problems.append(f"cross_attention_dim {u.cross_attention_dim}, expected {profile.cond_dim}")
    if profile.size_multiple % (profile.latent_downsampling * 2 ** levels):
        problems.append(f"UNet halves the latent {levels} times, size_multiple {profile.size_multiple} does not allow it")
    if d.latent_channels != profile.latent_channels:
        problems.append(f"decoder latent_channels {d.latent_channels}, expected {profile.latent_channels}")
    if upsampling != profile.latent_downsampling:
        problems.append(f"decoder upsamples {upsampling}x, expected {profile.latent_downsampling}x")
    if problems:
        raise ModelNotFoundError(f"{path} does not fit model {name}: " + "; ".join(problems))


def _finish(module):
    module.eval()
    module.requires_grad_(False)
    return module


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


# ---------------------------------------------------------------- diffusers folders


def _from_pretrained(cls, folder: Path):
    weights = weights_file(folder)
    if weights is None:
        raise ModelNotFoundError(f"{folder} has no {cls.__name__} weights (diffusion_pytorch_model.safetensors)")
    variant = "fp16" if weights.name == WEIGHTS_FP16_NAME else None
    try:
        model, info = cls.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, variant=variant,
            torch_dtype=torch.float32, low_cpu_mem_usage=is_accelerate_available(), output_loading_info=True)
    except Exception as exc:  # diffusers raises OSError, ValueError, RuntimeError, SafetensorError...
        raise ModelNotFoundError(f"{folder} is not a usable {cls.__name__} folder: {_short(exc)}") from exc
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        described = "; ".join(f"{len(v)} {k.replace('_', ' ')} (e.g. {v[0]})" for k, v in bad.items())
        raise ModelNotFoundError(f"{folder} is not a complete {cls.__name__}: {described}")
    return _finish(model)


def load_unet_folder(folder: Path) -> UNet2DConditionModel:
    """A diffusers `unet/` folder (config.json + diffusion_pytorch_model[.fp16].safetensors)."""
    cls_name = config_class(folder)
    if cls_name != "UNet2DConditionModel":
        raise ModelNotFoundError(f"{folder} is not a UNet2DConditionModel folder (config class {cls_name})")
    return _from_pretrained(UNet2DConditionModel, folder)


def load_decoder(folder: Path) -> AutoencoderTiny:
    """TAESD: a diffusers AutoencoderTiny folder, or a folder with only its diffusers weights
    (then the shipped madebyollin/taesd config is used)."""
    if (folder / "config.json").exists():
        cls_name = config_class(folder)
        if cls_name != "AutoencoderTiny":
            raise ModelNotFoundError(f"{folder} is not an AutoencoderTiny (TAESD) folder (config class {cls_name})")
        return _from_pretrained(AutoencoderTiny, folder)
    weights = weights_file(folder)
    if weights is None:
        raise ModelNotFoundError(f"{folder} has no TAESD weights (diffusion_pytorch_model.safetensors)")
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights))
    except Exception as exc:
        raise ModelNotFoundError(f"{weights} is not a safetensors file: {_short(exc)}") from exc
    return _from_state_dict(AutoencoderTiny, TAESD_CONFIG, state, weights)


# ---------------------------------------------------------------- original single files


def _single_file_config(path: Path) -> Path:
    """The shipped UNet config that fits an original checkpoint (by its conv_in width)."""
    from safetensors import safe_open

    key = LDM_UNET_PREFIX + "input_blocks.0.0.weight"
    try:
        with safe_open(str(path), framework="pt") as f:
            if key not in f.keys():  # noqa: SIM118 (safe_open has no __contains__)
                raise ModelNotFoundError(
                    f"{path} is not a Stable Diffusion checkpoint: it has no {LDM_UNET_PREFIX}* UNet weights")
            width = f.get_slice(key).get_shape()[0]
    except ModelNotFoundError:
        raise
    except Exception as exc:
        raise ModelNotFoundError(f"{path} is not a safetensors checkpoint: {_short(exc)}") from exc
    for config_file in ARCHITECTURES.values():
        if json.loads(config_file.read_text())["block_out_channels"][0] == width:
            return config_file
    raise ModelNotFoundError(f"{path} holds a UNet of no registered model (first block {width} channels)")


def load_unet_single_file(path: Path, config_file: Path | None = None) -> UNet2DConditionModel:
    """The UNet of an original (LDM/SGM layout, `model.diffusion_model.*`) `.safetensors` checkpoint.

    Only the UNet's tensors are read (not the text encoder or the VAE of a full
    checkpoint). The config is a shipped diffusers config (by default the one of the
    registered architecture the checkpoint fits); the keys are converted by diffusers'
    `convert_ldm_unet_checkpoint`, the converter `from_single_file` uses, and loaded
    strictly into a model built on the meta device.
    """
    from safetensors import safe_open

    path = Path(path)
    config_file = Path(config_file) if config_file is not None else _single_file_config(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            checkpoint = {k: f.get_tensor(k) for k in f.keys() if k.startswith(LDM_UNET_PREFIX)}  # noqa: SIM118
    except Exception as exc:
        raise ModelNotFoundError(f"{path} is not a safetensors checkpoint: {_short(exc)}") from exc
    if not checkpoint:
        raise ModelNotFoundError(f"{path} is not a Stable Diffusion checkpoint: it has no {LDM_UNET_PREFIX}* UNet weights")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = UNet2DConditionModel.load_config(str(config_file), local_files_only=True)
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    try:
        converted = convert_ldm_unet_checkpoint(checkpoint, config=config)
    except Exception as exc:
        raise ModelNotFoundError(f"{path} does not fit the UNet config {config_file.name}: {_short(exc)}") from exc
    if len(converted) != len(checkpoint):
        raise ModelNotFoundError(
            f"{path} does not fit the UNet config {config_file.name}: {len(checkpoint)} UNet tensors, "
            f"{len(converted)} of them mapped")
    return _from_state_dict(UNet2DConditionModel, config, converted, path)


def _from_state_dict(cls, config: dict | Path, state: dict[str, torch.Tensor], origin: Path):
    """Build `cls` from a config without initialising it and load `state` strictly, as float32."""
    if isinstance(config, Path):
        config = {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}
    with torch.device("meta"):
        model = cls.from_config(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"] if unexpected else []
        raise ModelNotFoundError(f"{origin} is not a complete {cls.__name__}: weights " + ", ".join(parts))
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelNotFoundError(f"{origin} does not fit {cls.__name__}: {_short_mismatch(exc)}") from exc
    leftover = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if leftover:
        raise ModelNotFoundError(f"{origin}: {cls.__name__} tensors left unloaded (e.g. {leftover[0]})")
    return _finish(model)


def _short_mismatch(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), lines[-1] if lines else "")
    return detail if len(detail) <= 200 else detail[:197] + "..."


# ---------------------------------------------------------------- manifests


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(folder: Path) -> dict | None:
    """Check a folder's MANIFEST.json (SHA-256 of its files); returns it, or None if absent."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelIntegrityError(f"{manifest_path} is not a valid manifest: {_short(exc)}") from None
    name = manifest.get("name", folder.name)
    fix = f"reinstall libpromptus or run {manifest['generator']}" if manifest.get("generator") else "restore the files"
    for rel, digest in sorted(files.items()):
        file = folder / rel
        if not file.is_file():
            raise ModelIntegrityError(f"model {name}: {file} is missing: {fix}")
        if file_sha256(file) != digest:
            raise ModelIntegrityError(f"model {name}: {file} was altered (SHA-256 differs from {MANIFEST}): {fix}")
    return manifest
