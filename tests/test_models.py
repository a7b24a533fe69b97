"""libpromptus.models: the shipped tiny model (its profile, loading through diffusers, a
generation step, its float16 weights and the writer of its files), the §7 identity,
and the integrity checks of the shipped weights.

Every test runs with HF_HUB_OFFLINE=1 and with sockets blocked (models_helpers.offline),
so any attempt to reach the network fails the test instead of silently downloading.
Finding and loading other models is in test_models_loading.py.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before diffusers / huggingface_hub are imported

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

import models_helpers
from diffusers import AutoencoderTiny, UNet2DConditionModel
from models_helpers import (
    MANIFEST,
    TINY_DIR,
    TINY_UNET_CONFIG,
    WEIGHTS,
    one_line,
    tiny_state,
)
from safetensors.torch import load_file, save_file

from libpromptus.models import (
    ModelIntegrityError,
    ModelNotFoundError,
    load_generator,
    loading,
    model_identity,
    tiny_model,
)
from libpromptus.models import identity as identity_module
from libpromptus.process.profiles import PROFILES, SD_TURBO, TINY

# the fixtures of models_helpers: `offline` (autouse) and the module's loaded `tiny` generator
offline, tiny = models_helpers.offline, models_helpers.tiny


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
