"""libpromptus.models: finding and loading a generator: resolve_model, sd-turbo not found
(one-line errors that say what to download), sd-turbo found (in the model directory,
as an fp16 variant, in the HF cache), and original single-file checkpoints (the tiny
UNet written under its LDM key names).

Every test runs offline, as in test_models.py (models_helpers.offline).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before diffusers / huggingface_hub are imported

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

import models_helpers
from diffusers import UNet2DConditionModel
from models_helpers import TINY_DIR, TINY_UNET_CONFIG, WEIGHTS, one_line, tiny_state
from safetensors.torch import load_file, save_file

from libpromptus.models import (
    ModelNotFoundError,
    load_generator,
    loading,
    locations,
    resolve_model,
)
from libpromptus.process.profiles import SD_TURBO

# the fixtures of models_helpers: `offline` (autouse) and the module's loaded `tiny` generator
offline, tiny = models_helpers.offline, models_helpers.tiny


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty model directory and HF cache; no PROMPTUS_MODEL."""
    models, hub, home = tmp_path / "models", tmp_path / "hub", tmp_path / "hf-home"
    for folder in (models, hub, home):
        folder.mkdir()
    monkeypatch.setenv("PROMPTUS_MODEL_DIR", str(models))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("PROMPTUS_MODEL", raising=False)

    class Places:
        pass

    p = Places()
    p.models, p.hub, p.home, p.tmp = models, hub, home, tmp_path
    return p


def assert_modules_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


# ---------------------------------------------------------------- diffusers -> original (LDM) keys

_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_FIXED = {"conv_in.": "input_blocks.0.0.", "time_embedding.linear_1.": "time_embed.0.",
          "time_embedding.linear_2.": "time_embed.2.", "conv_norm_out.": "out.0.", "conv_out.": "out.2."}


def ldm_key(key: str, config: dict) -> str:
    """The original Stable Diffusion (LDM/SGM) name of a diffusers UNet2DConditionModel tensor."""
    per = config["layers_per_block"] + 1
    up_attention = ["CrossAttn" in t for t in config["up_block_types"]]

    def resnet(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return f"{_RESNET[head]}.{tail}"

    for old, new in _FIXED.items():
        if key.startswith(old):
            return new + key[len(old):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = 1 + int(m[1]) * per + int(m[3])
        return f"input_blocks.{i}.0.{resnet(m[4])}" if m[2] == "resnets" else f"input_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = int(m[1]) * per + int(m[3])
        return f"output_blocks.{i}.0.{resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        b = int(m[1])
        return f"output_blocks.{b * per + per - 1}.{2 if up_attention[b] else 1}.conv.{m[2]}"
    raise KeyError(key)


def to_ldm(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    return {"model.diffusion_model." + ldm_key(k, config): v for k, v in state.items()}


def write_ldm_checkpoint(path: Path, *, drop: str | None = None, dtype=None) -> Path:
    """The tiny UNet as an original single-file checkpoint, with decoy VAE/text-encoder tensors."""
    config = json.loads(TINY_UNET_CONFIG.read_text())
    state = to_ldm(tiny_state("unet"), config)
    if drop:
        del state[drop]
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
    state["first_stage_model.decoder.conv_in.weight"] = torch.zeros(8, 4, 3, 3)
    state["conditioner.embedders.0.model.positional_embedding"] = torch.zeros(77, 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


# ---------------------------------------------------------------- resolve_model


def test_resolve_model_order(places, monkeypatch, tmp_path):
    assert resolve_model(None) == "sd-turbo"                # default
    monkeypatch.setenv("PROMPTUS_MODEL", "tiny")
    assert resolve_model(None) == "tiny"                    # environment
    assert resolve_model("sd-turbo") == "sd-turbo"          # explicit beats the environment
    folder = tmp_path / "somewhere"
    folder.mkdir()
    assert resolve_model(str(folder)) == folder.resolve()   # an explicit path
    assert resolve_model(folder) == folder.resolve()
    monkeypatch.setenv("PROMPTUS_MODEL", str(folder))
    assert resolve_model(None) == folder.resolve()          # a path in the environment
    monkeypatch.setenv("PROMPTUS_MODEL", "")
    assert resolve_model(None) == "sd-turbo"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert resolve_model("tiny") == "tiny"                  # a registered name beats a relative folder
    assert resolve_model("./tiny") == (tmp_path / "tiny").resolve()


def test_resolve_model_errors(places, tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model("sd-xl")
    assert "sd-xl" in one_line(exc) and "sd-turbo" in str(exc.value) and "tiny" in str(exc.value)
    with pytest.raises(ModelNotFoundError) as exc:
        resolve_model(str(tmp_path / "nothing" / "model.safetensors"))
    assert "does not exist" in one_line(exc)


def test_load_generator_uses_the_environment(places, monkeypatch):
    monkeypatch.setenv("PROMPTUS_MODEL", "tiny")
    assert load_generator().name == "tiny"


# ---------------------------------------------------------------- sd-turbo: not found


def test_sd_turbo_missing_gives_one_line(places):
    for spec in ("sd-turbo", None):
        with pytest.raises(ModelNotFoundError) as exc:
            load_generator(spec)
        message = one_line(exc)
        assert message.startswith("model sd-turbo not found")
        assert "huggingface-cli download stabilityai/sd-turbo" in message
        assert "madebyollin/taesd" in message and str(places.models) in message and "--model" in message


def test_sd_turbo_without_taesd_names_the_decoder(places):
    shutil.copytree(TINY_DIR / "unet", places.models / "sd-turbo" / "unet")
    with pytest.raises(ModelNotFoundError) as exc:
        load_generator("sd-turbo")
    message = one_line(exc)
    assert "sd-turbo" in message and "TAESD" in message and "madebyollin/taesd" in message
    (places.models / "taesd").mkdir()
    (places.models / "taesd" / "taesd_decoder.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError) as exc:
        load_generator("sd-turbo")
    assert "taesd_decoder.safetensors" in one_line(exc) and "original layout" in str(exc.value)


@pytest.mark.parametrize("make", ["empty-dir", "text-file", "ckpt", "no-unet-tensors", "vae-as-unet", "bad-json"])
def test_a_path_that_is_not_a_model(places, make):
    p = places.tmp / "thing"
    if make == "empty-dir":
        p.mkdir()
    elif make == "text-file":
        p = p.with_suffix(".txt")
        p.write_text("hello")
    elif make == "ckpt":
        p = p.with_suffix(".ckpt")
        p.write_bytes(b"\x80\x02")
    elif make == "no-unet-tensors":
        p = p.with_suffix(".safetensors")
        save_file({"first_stage_model.x": torch.zeros(2)}, str(p))
    elif make == "vae-as-unet":
        shutil.copytree(TINY_DIR / "vae", p / "unet")
    elif make == "bad-json":
        p = p.with_suffix(".safetensors")
        p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(ModelNotFoundError) as exc:
        load_generator(str(p))
    assert str(p) in one_line(exc) or p.name in str(exc.value)


def test_incomplete_folder_is_refused(places):
    unet = places.tmp / "m" / "unet"
    shutil.copytree(TINY_DIR / "unet", unet)
    state = load_file(str(unet / WEIGHTS))
    del state["conv_out.bias"]
    save_file(state, str(unet / WEIGHTS))
    with pytest.raises(ModelNotFoundError) as exc:
        load_generator(unet.parent)
    assert "conv_out.bias" in one_line(exc)


# ---------------------------------------------------------------- sd-turbo: found


def test_fake_sd_turbo_in_the_model_directory(places, tiny):
    shutil.copytree(TINY_DIR / "unet", places.models / "sd-turbo" / "unet")
    shutil.copytree(TINY_DIR / "vae", places.models / "sd-turbo" / "vae")    # an AutoencoderTiny, ignored
    shutil.copytree(TINY_DIR / "vae", places.models / "taesd")
    g = load_generator("sd-turbo")
    assert g.name == "sd-turbo" and g.profile is SD_TURBO
    assert str(places.models / "sd-turbo" / "unet") in g.source and str(places.models / "taesd") in g.source
    assert g.identity() == tiny.identity()                 # same weights, same hash, wherever they lie
    assert_modules_equal(g.unet, tiny.unet)


def test_model_directory_fp16_variant_and_weights_only_taesd(places, tiny, monkeypatch):
    unet = places.models / "sd-turbo" / "unet"
    shutil.copytree(TINY_DIR / "unet", unet)
    (unet / WEIGHTS).rename(unet / "diffusion_pytorch_model.fp16.safetensors")
    (places.models / "taesd").mkdir()
    shutil.copy(TINY_DIR / "vae" / WEIGHTS, places.models / "taesd" / WEIGHTS)   # no config.json
    # a weights-only taesd/ uses the shipped madebyollin/taesd config: the tiny decoder does not fit it...
    with pytest.raises(ModelNotFoundError, match="does not fit AutoencoderTiny|not a complete AutoencoderTiny"):
        load_generator("sd-turbo")
    # ...but loads with its own config in that role
    monkeypatch.setattr(loading, "TAESD_CONFIG", TINY_DIR / "vae" / "config.json")
    g = load_generator("sd-turbo")
    assert g.identity() == tiny.identity()
    assert all(p.dtype == torch.float32 for p in g.unet.parameters())


def hf_cache_repo(hub: Path, repo_id: str, revision: str, files: dict[str, Path]) -> Path:
    """A repository in the HF cache layout: blobs, a snapshot of symlinks, refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / revision
    for rel, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return snapshot


def fake_hf_cache(hub: Path) -> tuple[Path, Path]:
    sd = hf_cache_repo(hub, "stabilityai/sd-turbo", "1" * 40, {
        "unet/config.json": TINY_DIR / "unet" / "config.json", f"unet/{WEIGHTS}": TINY_DIR / "unet" / WEIGHTS})
    taesd = hf_cache_repo(hub, "madebyollin/taesd", "2" * 40, {
        "config.json": TINY_DIR / "vae" / "config.json", WEIGHTS: TINY_DIR / "vae" / WEIGHTS})
    # an older, incomplete snapshot is skipped
    (hub / "models--stabilityai--sd-turbo" / "snapshots" / ("0" * 40) / "unet").mkdir(parents=True)
    return sd, taesd


def test_fake_sd_turbo_in_the_hf_cache(places, tiny):
    sd, taesd = fake_hf_cache(places.hub)
    g = load_generator("sd-turbo")
    assert g.name == "sd-turbo" and str(sd / "unet") in g.source and str(taesd) in g.source
    assert g.identity() == tiny.identity()


def test_hf_home_is_used_without_hf_hub_cache(places, tiny, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    (places.home / "hub").mkdir()
    sd, _ = fake_hf_cache(places.home / "hub")
    assert str(sd) in load_generator("sd-turbo").source


def test_the_model_directory_comes_before_the_hf_cache(places):
    fake_hf_cache(places.hub)
    write_ldm_checkpoint(places.models / "sd_turbo.safetensors")
    g = load_generator("sd-turbo")
    assert str(places.models / "sd_turbo.safetensors") in g.source and "single file" in g.source
    assert "models--madebyollin--taesd" in g.source          # the decoder only in the cache


# ---------------------------------------------------------------- original single files


def test_single_file_unet_loads_with_a_shipped_config(places, tiny):
    path = write_ldm_checkpoint(places.tmp / "tiny_original.safetensors")
    unet = loading.load_unet_single_file(path, config_file=TINY_UNET_CONFIG)
    assert isinstance(unet, UNet2DConditionModel) and not unet.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in unet.parameters())
    assert_modules_equal(unet, tiny.unet)
    # the config is chosen by the checkpoint's architecture when not given
    assert_modules_equal(loading.load_unet_single_file(path), tiny.unet)
    # diffusers' public from_single_file accepts the same local config file, offline
    public = UNet2DConditionModel.from_single_file(str(path), config=str(TINY_UNET_CONFIG), local_files_only=True)
    assert_modules_equal(public, tiny.unet)


def test_single_file_through_load_generator(places, tiny):
    path = write_ldm_checkpoint(places.tmp / "ckpt" / "tiny_original.safetensors", dtype=torch.float32)
    g = load_generator(str(path))
    assert g.name == "tiny" and "single file" in g.source    # named by its architecture
    assert g.identity() == tiny.identity()
    folder = places.tmp / "official-checkpoints"
    write_ldm_checkpoint(folder / "sd_turbo.safetensors")
    shutil.copytree(TINY_DIR / "vae", folder / "taesd")
    g = load_generator(folder)
    assert str(folder / "taesd") in g.source and g.identity() == tiny.identity()


def test_incomplete_single_file_is_refused(places):
    path = write_ldm_checkpoint(places.tmp / "broken.safetensors",
                                drop="model.diffusion_model.output_blocks.1.1.proj_out.weight")
    with pytest.raises(ModelNotFoundError) as exc:
        load_generator(path)
    assert "broken.safetensors" in one_line(exc) and "proj_out.weight" in str(exc.value)


def test_shipped_sd_turbo_config_is_the_sd21_unet():
    """The single-file config builds the 865,910,724-parameter SD 2.1 UNet, and every one of
    its tensors survives the original-layout round trip through diffusers' converter."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = json.loads(locations.SD_TURBO_UNET_CONFIG.read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    state = unet.state_dict()
    assert sum(t.numel() for t in state.values()) == 865_910_724
    assert len(state) == 686
    converted = convert_ldm_unet_checkpoint(to_ldm(state, config), config=config)
    assert set(converted) == set(state)
    assert all(converted[k].shape == state[k].shape for k in state)
