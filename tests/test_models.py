"""libpromptus.models: offline loading of the generators, the §7 identity, the tiny model.

Every test runs with HF_HUB_OFFLINE=1 and with sockets blocked, so any attempt to reach
the network fails the test instead of silently downloading.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import socket
import struct
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before diffusers / huggingface_hub are imported

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from diffusers import AutoencoderTiny, UNet2DConditionModel
from safetensors.torch import load_file, save_file

from libpromptus.models import (
    Generator,
    ModelIntegrityError,
    ModelNotFoundError,
    load_generator,
    loading,
    locations,
    model_identity,
    resolve_model,
    tiny_model,
)
from libpromptus.models import identity as identity_module
from libpromptus.process.profiles import PROFILES, SD_TURBO, TINY

TINY_DIR = locations.TINY_DIR
MANIFEST = json.loads((TINY_DIR / "MANIFEST.json").read_text())
TINY_UNET_CONFIG = TINY_DIR / "unet" / "config.json"
WEIGHTS = "diffusion_pytorch_model.safetensors"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 and no sockets: a network attempt raises, and fails the test even
    if the library swallowed the exception."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert not attempts, f"network access attempted: {attempts}"


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


@pytest.fixture(scope="module")
def tiny() -> Generator:
    return load_generator("tiny")


def tiny_state(kind: str) -> dict[str, torch.Tensor]:
    return load_file(str(TINY_DIR / kind / WEIGHTS))


def assert_modules_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k].float(), sb[k].float()), k


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message and message
    return message


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


# ---------------------------------------------------------------- the tiny model


def test_tiny_profile_is_registered_and_fits_the_shipped_unet():
    config = json.loads(TINY_UNET_CONFIG.read_text())
    assert PROFILES["tiny"] is TINY and PROFILES["sd-turbo"] is SD_TURBO
    assert TINY.size_multiple == TINY.latent_downsampling * 2 ** (len(config["block_out_channels"]) - 1) == 16
    assert (TINY.cond_tokens, TINY.cond_dim, TINY.latent_channels) == (77, 1024, 4)
    assert TINY.schedule == SD_TURBO.schedule and TINY.timestep == 49 and TINY.noise_seed == 88
    assert (TINY.prev_weight, TINY.noise_weight) == (0.98, 0.22)   # sqrt(alpha_bar(49)), sqrt(1 - ...) rounded
    header = TINY.sequence_header(width=40, height=24, fps_num=30, fps_den=1, frame_count=3,
                                  model_hash=bytes.fromhex(MANIFEST["identity"]))
    assert header.model_name == "tiny" and header.alpha_bar == pytest.approx(0.95262557, rel=1e-7)


def test_tiny_loads_through_the_diffusers_folder_path(monkeypatch):
    calls = []
    for cls in (UNet2DConditionModel, AutoencoderTiny):
        original = cls.from_pretrained.__func__

        def spy(klass, *args, _original=original, **kwargs):
            calls.append((klass.__name__, args, kwargs))
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    g = load_generator("tiny")
    assert [(c[0], Path(c[1][0])) for c in calls] == [
        ("UNet2DConditionModel", TINY_DIR / "unet"), ("AutoencoderTiny", TINY_DIR / "vae")]
    assert all(c[2]["local_files_only"] and c[2]["use_safetensors"] for c in calls)
    assert g.name == "tiny" and g.profile is TINY
    assert isinstance(g.unet, UNet2DConditionModel) and isinstance(g.decoder, AutoencoderTiny)
    for module in (g.unet, g.decoder):
        assert not module.training
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" and not p.requires_grad
                   for p in module.parameters())
    assert g.unet.config.cross_attention_dim == 1024 and g.decoder.config.latent_channels == 4
    # the weights are exactly the shipped float16 values
    for name, value in tiny_state("unet").items():
        assert torch.equal(g.unet.state_dict()[name], value.float()), name


def test_tiny_runs_one_generation_step(tiny):
    z = torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(0))
    c = torch.randn(2, 77, 1024, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tiny.unet(z, TINY.timestep, encoder_hidden_states=c).sample
        image = tiny.decoder.decode(out).sample
    assert out.shape == z.shape and image.shape == (2, 3, 32, 48)
    assert torch.isfinite(out).all() and torch.isfinite(image).all()


# ---------------------------------------------------------------- identity


def spec_identity(named: dict[str, torch.Tensor]) -> bytes:
    """SPEC.md §7 written out plainly (whole tensors, numpy), to check the chunked version."""
    h = hashlib.sha256()
    for name in sorted(named, key=str.encode):
        t = named[name].detach().cpu()
        h.update(name.encode() + b"\0" + bytes([t.ndim]) + b"".join(struct.pack("<I", d) for d in t.shape))
        h.update(t.float().numpy().astype("<f2").tobytes())
    return h.digest()


def test_identity_known_answer():
    unet, vae = torch.nn.Module(), torch.nn.Module()
    unet.w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    unet.register_buffer("B", torch.tensor([[0.5]], dtype=torch.float64))
    vae.decoder = torch.nn.Linear(1, 1)
    vae.encoder = torch.nn.Linear(1, 1)                    # not part of the identity
    with torch.no_grad():
        vae.decoder.weight.fill_(65504.0)
        vae.decoder.bias.fill_(1.0 + 2 ** -12)             # rounds to 1.0 in binary16
    expected = hashlib.sha256(
        b"unet.B\x00\x02" + struct.pack("<II", 1, 1) + b"\x00\x38"
        + b"unet.w\x00\x01" + struct.pack("<I", 2) + b"\x00\x3c\x00\xc0"
        + b"vae.decoder.bias\x00\x01" + struct.pack("<I", 1) + b"\x00\x3c"
        + b"vae.decoder.weight\x00\x02" + struct.pack("<II", 1, 1) + b"\xff\x7b"
    ).digest()
    assert model_identity(unet, vae) == expected
    with torch.no_grad():
        vae.encoder.weight.fill_(3.0)
    assert model_identity(unet, vae) == expected


def test_identity_is_deterministic_and_matches_the_manifest(tiny, monkeypatch):
    assert len(tiny.identity()) == 32
    assert tiny.identity().hex() == MANIFEST["identity"]
    assert model_identity(tiny.unet, tiny.decoder) == tiny.identity()
    assert load_generator("tiny").identity() == tiny.identity()
    named = {f"unet.{k}": v for k, v in tiny.unet.state_dict().items()}
    named.update({f"vae.{k}": v for k, v in tiny.decoder.state_dict().items() if k.startswith("decoder.")})
    assert spec_identity(named) == tiny.identity()
    monkeypatch.setattr(identity_module, "CHUNK_VALUES", 1000)  # many chunks per tensor
    assert model_identity(tiny.unet, tiny.decoder) == tiny.identity()


def test_identity_is_independent_of_dtype_and_rounds_to_binary16(tiny):
    g = copy.deepcopy(tiny)
    g.to(dtype=torch.float16)
    assert next(g.unet.parameters()).dtype == torch.float16
    assert model_identity(g.unet, g.decoder) == tiny.identity()
    g.to(dtype=torch.float32)
    assert model_identity(g.unet, g.decoder) == tiny.identity()
    # float32 values within half an ulp of the binary16 ones hash the same
    with torch.no_grad():
        for p in g.unet.parameters():
            p.mul_(1 + 2 ** -14)
    assert next(g.unet.parameters()).to(torch.float16).equal(next(tiny.unet.parameters()).half())
    assert model_identity(g.unet, g.decoder) == tiny.identity()


def test_identity_changes_with_one_weight_and_is_cached(tiny):
    g = copy.deepcopy(tiny)
    first = g.identity()
    with torch.no_grad():
        g.unet.conv_in.weight[0, 0, 0, 0] += 0.25
    assert g.identity() == first                            # cached after the first call
    changed = model_identity(g.unet, g.decoder)
    assert changed != first and len(changed) == 32
    g2 = copy.deepcopy(tiny)
    with torch.no_grad():
        g2.decoder.decoder.layers[0].bias[0] += 0.25
    assert model_identity(g2.unet, g2.decoder) != first
    g3 = copy.deepcopy(tiny)
    with torch.no_grad():
        g3.decoder.encoder.layers[0].bias[0] += 0.25       # the encoder is not pinned
    assert model_identity(g3.unet, g3.decoder) == first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_identity_on_cuda_float16_matches(tiny):
    g = copy.deepcopy(tiny).to("cuda", torch.float16)
    assert model_identity(g.unet, g.decoder) == tiny.identity()


# ---------------------------------------------------------------- shipped weights are checked


def copy_tiny(dest: Path) -> Path:
    shutil.copytree(TINY_DIR, dest)
    return dest


def test_altered_shipped_weights_are_refused(tmp_path, monkeypatch):
    altered = copy_tiny(tmp_path / "tiny")
    weights = altered / "unet" / WEIGHTS
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01                                       # one bit of one weight
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(loading, "TINY_DIR", altered)
    with pytest.raises(ModelIntegrityError) as exc:
        load_generator("tiny")
    message = one_line(exc)
    assert "tiny" in message and "altered" in message and "unet" in message
    assert isinstance(exc.value, ModelNotFoundError)
    with pytest.raises(ModelIntegrityError):
        load_generator(str(altered))                        # the same check for an explicit path


def test_manifest_identity_is_checked_too(tmp_path):
    altered = copy_tiny(tmp_path / "tiny")
    state = load_file(str(altered / "unet" / WEIGHTS))
    state["conv_in.bias"] = state["conv_in.bias"] + 1
    save_file(state, str(altered / "unet" / WEIGHTS), metadata={"format": "pt"})
    manifest = json.loads((altered / "MANIFEST.json").read_text())
    manifest["files"][f"unet/{WEIGHTS}"] = loading.file_sha256(altered / "unet" / WEIGHTS)
    (altered / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="identity differs"):
        load_generator(altered)


def test_missing_manifest_or_file_is_refused(tmp_path, monkeypatch):
    altered = copy_tiny(tmp_path / "tiny")
    (altered / "vae" / "config.json").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        load_generator(altered)
    (altered / "MANIFEST.json").unlink()
    monkeypatch.setattr(loading, "TINY_DIR", altered)
    with pytest.raises(ModelIntegrityError, match="MANIFEST.json"):
        load_generator("tiny")


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


# ---------------------------------------------------------------- tiny_model.write


def test_tiny_writer_reproduces_the_shipped_files(tmp_path):
    """Writing the shipped tensors back gives the shipped bytes, configs and manifest included."""
    states = {kind: tiny_state(kind) for kind in ("unet", "vae")}
    manifest = tiny_model.write(tmp_path / "tiny", states, MANIFEST["training"])
    assert manifest == MANIFEST
    shipped = sorted(p.relative_to(TINY_DIR) for p in TINY_DIR.rglob("*") if p.is_file())
    made = sorted(p.relative_to(tmp_path / "tiny") for p in (tmp_path / "tiny").rglob("*") if p.is_file())
    assert made == shipped == sorted(Path(f) for f in (*tiny_model.FILES, "MANIFEST.json"))
    for rel in shipped:
        assert (tmp_path / "tiny" / rel).read_bytes() == (TINY_DIR / rel).read_bytes(), rel


def test_tiny_weights_are_small_float16():
    for kind in ("unet", "vae"):
        size = (TINY_DIR / kind / WEIGHTS).stat().st_size
        assert size < 4_000_000, (kind, size)
        assert all(t.dtype == torch.float16 for t in tiny_state(kind).values())
