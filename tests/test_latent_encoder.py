"""Latent encoders (SD VAE and TAESD), loaded offline."""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from libpromptus.models import ModelNotFoundError
from libpromptus.models.latent_encoder import load_latent_encoder


@pytest.fixture()
def model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PROMPTUS_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("PROMPTUS_MODEL", raising=False)
    return tmp_path / "models"


def _frames(batch=2, height=32, width=48):
    return torch.from_numpy((np.random.RandomState(1).rand(batch, height, width, 3) * 255).astype(np.uint8))


def test_tiny_uses_its_own_autoencoder_tiny_encoder(model_dir):
    encoder = load_latent_encoder("tiny")
    frames = _frames()
    latents = encoder.encode(frames)
    assert encoder.kind == "taesd" and latents.shape == (2, 4, 4, 6) and latents.dtype == torch.float32
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = encoder.module.encode(x).latents
    assert torch.equal(latents, expected)
    with pytest.raises(ModelNotFoundError, match="tiny has no SD VAE"):
        load_latent_encoder("tiny", kind="vae")


def test_sd_vae_is_found_in_the_model_directory_and_scaled(model_dir):
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        scaling_factor=0.18215).eval()
    vae.save_pretrained(model_dir / "sd-turbo" / "vae")
    encoder = load_latent_encoder("sd-turbo")
    assert encoder.kind == "vae" and encoder.scaling_factor == pytest.approx(0.18215)
    frames = _frames(1, 16, 16)
    x = frames.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    with torch.no_grad():
        expected = vae.encode(x).latent_dist.mean * 0.18215
    assert torch.allclose(encoder.encode(frames), expected, atol=1e-6)


def test_missing_sd_vae_and_taesd_are_one_line_errors(model_dir):
    for kind, needle in (("vae", "the SD VAE of sd-turbo was not found"), ("taesd", "TAESD for sd-turbo not found")):
        with pytest.raises(ModelNotFoundError) as err:
            load_latent_encoder("sd-turbo", kind=kind)
        assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="choose vae or taesd"):
        load_latent_encoder("sd-turbo", kind="jpeg")
