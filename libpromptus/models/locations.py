"""Where the generator models are: registered names, the model directory, the HF cache.

Only the local file system is read: nothing here (or in the loaders) ever contacts the
network. `sd-turbo` is searched, first match wins, in

1. a path given explicitly (see `resolve_model`),
2. the libpromptus model directory `$PROMPTUS_MODEL_DIR` (default
   `~/.cache/libpromptus/models`): `sd-turbo/` (a diffusers snapshot of
   stabilityai/sd-turbo) or `sd_turbo.safetensors` (the original single file), and
   `taesd/` (a diffusers snapshot of madebyollin/taesd, or only its
   `diffusion_pytorch_model.safetensors`),
3. the Hugging Face hub cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
   `~/.cache/huggingface/hub`): snapshots of stabilityai/sd-turbo and madebyollin/taesd
   that are already there.

The `tiny` test model ships inside the package (`libpromptus/models/tiny/`), and
`sd-turbo-random` (SD-Turbo's architecture with seeded random weights) is built in
memory: neither reads anything but the package.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from ..process.profiles import PROFILES

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"
#: The original-layout (single file) UNet config of SD-Turbo (= SD 2.1 base).
SD_TURBO_UNET_CONFIG = CONFIG_DIR / "sd_turbo_unet.json"
#: The AutoencoderTiny config of madebyollin/taesd, for a `taesd/` folder holding only weights.
TAESD_CONFIG = CONFIG_DIR / "taesd.json"
#: The shipped test model (a diffusers layout with `unet/` and `vae/`).
TINY_DIR = PACKAGE_DIR / "tiny"

DEFAULT_MODEL = "sd-turbo"
#: Registered models whose weights are seeded random numbers, built in memory (never on
#: disk, never downloaded), by the profile they have: CI and the benchmarks run SD-Turbo's
#: architecture through them where its weights are absent.
RANDOM_MODELS: dict[str, str] = {"sd-turbo-random": "sd-turbo"}
SD_TURBO_REPO = "stabilityai/sd-turbo"
TAESD_REPO = "madebyollin/taesd"
SD_TURBO_FILE = "sd_turbo.safetensors"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_FP16_NAME = "diffusion_pytorch_model.fp16.safetensors"
#: madebyollin's original TAESD files: diffusers has no converter for them.
TAESD_ORIGINAL_NAMES = ("taesd_decoder.safetensors", "taesd_decoder.pth")

SD_TURBO_HOWTO = (
    "download stabilityai/sd-turbo and madebyollin/taesd once "
    "(huggingface-cli download stabilityai/sd-turbo --include 'unet/*'; "
    "huggingface-cli download madebyollin/taesd) or put sd_turbo.safetensors and taesd/ in {model_dir}, "
    "or pass --model PATH"
)


def registered_models() -> tuple[str, ...]:
    return (*PROFILES, *RANDOM_MODELS)


def model_dir() -> Path:
    """The libpromptus model directory: `$PROMPTUS_MODEL_DIR` or `~/.cache/libpromptus/models`."""
    value = os.environ.get("PROMPTUS_MODEL_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "libpromptus" / "models"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (read at call time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hf_snapshots(repo_id: str) -> list[Path]:
    """The cached snapshot folders of a hub repository: `refs/main`'s first, then newest first."""
    repo = hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return []
    found = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    try:
        main = (repo / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    found.sort(key=lambda p: p.name != main)          # stable: refs/main first
    return found


def resolve_model(spec: str | os.PathLike | None) -> str | Path:
    """A registered model name or the path of a model.

    `spec` None means `$PROMPTUS_MODEL`, else "sd-turbo". A registered name (Annex A;
    `tiny`, `sd-turbo-random`) wins over a same-named relative path (write `./tiny` for
    the folder).
    """
    if spec is None or spec == "":
        spec = os.environ.get("PROMPTUS_MODEL") or DEFAULT_MODEL
    if isinstance(spec, str) and spec in registered_models():
        return spec
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve()
    text = os.fspath(spec)
    if os.sep in text or "/" in text or text.endswith(".safetensors"):
        raise ModelNotFoundError(f"model path {text} does not exist")
    raise ModelNotFoundError(
        f"unknown model {text!r}: registered models are {', '.join(registered_models())}; "
        "or pass the path of a model directory or .safetensors file")


# ---------------------------------------------------------------- what a location holds


@dataclass(frozen=True)
class UnetSource:
    """A denoising network on disk: a diffusers `unet/` folder or an original single file."""

    path: Path
    single_file: bool


def weights_file(folder: Path) -> Path | None:
    """The diffusers weights of a model folder (fp32 preferred, else the fp16 variant)."""
    for name in (WEIGHTS_NAME, WEIGHTS_FP16_NAME):
        if (folder / name).is_file():          # follows the HF cache's symlinks to blobs
            return folder / name
    return None


def config_class(folder: Path) -> str | None:
    """`_class_name` of a diffusers folder's config.json, or None."""
    try:
        return json.loads((folder / "config.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def unet_folder(folder: Path) -> bool:
    return config_class(folder) == "UNet2DConditionModel" and weights_file(folder) is not None


def taesd_folder(folder: Path) -> bool:
    """A diffusers AutoencoderTiny folder, or a folder with only TAESD's diffusers weights."""
    if weights_file(folder) is None:
        return False
    cls = config_class(folder)
    return cls == "AutoencoderTiny" or (cls is None and not (folder / "config.json").exists())


def unet_in(folder: Path) -> UnetSource | None:
    """The UNet a model folder holds: `unet/` (diffusers) or `sd_turbo.safetensors`."""
    if unet_folder(folder / "unet"):
        return UnetSource(folder / "unet", single_file=False)
    if (folder / SD_TURBO_FILE).is_file():
        return UnetSource(folder / SD_TURBO_FILE, single_file=True)
    return None


def decoder_in(folder: Path) -> Path | None:
    """The TAESD a model folder holds: `taesd/`, or `vae/` when that is an AutoencoderTiny."""
    if taesd_folder(folder / "taesd"):
        return folder / "taesd"
    if config_class(folder / "vae") == "AutoencoderTiny" and weights_file(folder / "vae"):
        return folder / "vae"
    return None


def find_sd_turbo_unet() -> UnetSource | None:
    """SD-Turbo's UNet in the model directory, then in the HF cache."""
    root = model_dir()
    found = unet_in(root / "sd-turbo")
    if found is None and (root / SD_TURBO_FILE).is_file():
        found = UnetSource(root / SD_TURBO_FILE, single_file=True)
    if found is None:
        for snapshot in hf_snapshots(SD_TURBO_REPO):
            found = unet_in(snapshot)
            if found is not None:
                break
    return found


def find_taesd() -> Path | None:
    """TAESD (diffusers layout) in the model directory, then in the HF cache."""
    root = model_dir()
    for folder in (root / "taesd", root / "sd-turbo" / "taesd"):
        if taesd_folder(folder):
            return folder
    for snapshot in hf_snapshots(TAESD_REPO):
        if taesd_folder(snapshot):
            return snapshot
    return None


def original_taesd_files() -> list[Path]:
    """madebyollin's original-layout TAESD files lying where TAESD is looked for."""
    folders = [model_dir(), model_dir() / "taesd", *hf_snapshots(TAESD_REPO)]
    return [f / n for f in folders for n in TAESD_ORIGINAL_NAMES if (f / n).is_file()]


def sd_turbo_howto() -> str:
    return SD_TURBO_HOWTO.format(model_dir=model_dir())
