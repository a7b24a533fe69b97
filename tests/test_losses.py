"""The fitting loss (`libpromptus.encoder.losses`): MSE + perceptual + prompt term, never downloading.

Machine independent: every test that resolves weights points `torch.hub.get_dir` at a
temporary folder (empty, or holding a randomly initialised stand-in checkpoint with the
right tensor names), and any attempt to download fails the test.
"""
from __future__ import annotations

import logging
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from libpromptus.encoder import losses
from libpromptus.encoder.losses import (
    MS_SSIM_MIN_SIDE,
    PERCEPTUAL_KINDS,
    PerceptualLoss,
    fitting_loss,
    make_perceptual_loss,
    mse_per_sample,
    temporal_smoothness,
)

pytorch_msssim = pytest.importorskip("pytorch_msssim", reason="needs pytorch-msssim (pip install pytorch-msssim)")

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
VGG19_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)
VGG19_POOL_AFTER = {2, 7, 16, 25}  # a 2x2 max-pool follows these convs' ReLUs (before conv 5, 10, 19, 28)


# ------------------------------------------------------------------------ fixtures


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any download attempt through torch.hub fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    return tmp_path


@pytest.fixture
def no_lpips(monkeypatch):
    """Make `import lpips` fail, whatever is installed."""
    monkeypatch.setitem(sys.modules, "lpips", None)


def _vgg19_state_dict() -> dict:
    """Random VGG-19 `features.*` tensors with torchvision's names and shapes."""
    torch.manual_seed(0)
    state, channels = {}, 3
    widths = (64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512)
    for index, width in zip(VGG19_CONV_INDICES, widths):
        conv = nn.Conv2d(channels, width, 3, padding=1)
        state[f"features.{index}.weight"] = conv.weight.detach().clone()
        state[f"features.{index}.bias"] = conv.bias.detach().clone() * 10  # non-trivial biases
        channels = width
    return state


@pytest.fixture(scope="module")
def vgg_hub_dir(tmp_path_factory):
    """A hub folder holding a stand-in vgg19-dcbb9e9d.pth (random weights, right names)."""
    root = tmp_path_factory.mktemp("vgg_hub")
    (root / "checkpoints").mkdir()
    state = _vgg19_state_dict()
    torch.save(state, root / "checkpoints" / losses.VGG19_CHECKPOINT)
    return root, state


@pytest.fixture
def vgg_hub(vgg_hub_dir, monkeypatch):
    root, state = vgg_hub_dir
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(root))
    return state


def reference_vgg_p(x: torch.Tensor, y: torch.Tensor, state: dict) -> torch.Tensor:
    """The official P written out by hand: mean over the 16 conv outputs of the feature MSE."""

    def conv_outputs(img):
        h = ((img + 1) / 2 - IMAGENET_MEAN) / IMAGENET_STD
        outs = []
        for index in VGG19_CONV_INDICES:
            h = F.conv2d(h, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1)
            outs.append(h)
            h = torch.relu(h)
            if index in VGG19_POOL_AFTER:
                h = F.max_pool2d(h, 2)
        return outs

    per_layer = [((a - b) ** 2).flatten(1).mean(1) for a, b in zip(conv_outputs(x), conv_outputs(y))]
    return torch.stack(per_layer).mean(0)


def images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images in [-0.7, 0.7] (room for a +-0.25 offset)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(2, size // 8), max(2, size // 8), generator=g)
    img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    img = img + 0.1 * torch.rand(batch, 3, size, size, generator=g)
    return (img / img.amax() * 1.4 - 0.7).contiguous()


def grid_images(size: int, batch: int = 2) -> torch.Tensor:
    """Images on a 2**-6 grid in [-0.5, 0.5], so that adding 0.25 is exact in float32."""
    g = torch.Generator().manual_seed(1)
    return torch.randint(-32, 33, (batch, 3, size, size), generator=g).float() / 64


def independent_p(kind: str, x, y, state=None) -> torch.Tensor:
    """P(x, y) without going through `libpromptus.encoder.losses`."""
    if kind == "none":
        return torch.zeros(x.shape[0])
    if kind == "ms-ssim":
        a, b = (x + 1) / 2, (y + 1) / 2
        if min(x.shape[-2:]) > 160:
            return 1 - pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False)
        return 1 - pytorch_msssim.ssim(a, b, data_range=1.0, size_average=False)
    if kind == "vgg":
        return reference_vgg_p(x, y, state)
    raise AssertionError(kind)


# (kind, image size): ms-ssim both below and above the MS-SSIM threshold
CASES = [("none", 32), ("ms-ssim", 32), ("ms-ssim", 192), ("vgg", 32)]


@pytest.fixture
def build(vgg_hub_dir, monkeypatch):
    """build(kind) -> (loss, state): the vgg kind with the stand-in checkpoint."""

    def _build(kind):
        root, state = vgg_hub_dir
        monkeypatch.setattr(torch.hub, "get_dir", lambda: str(root))
        return make_perceptual_loss(kind), state

    return _build


# ------------------------------------------------------------------------ MSE and the formula


def test_kinds():
    assert PERCEPTUAL_KINDS == ("auto", "lpips", "vgg", "ms-ssim", "none")


def test_mse_of_a_constant_offset_is_d_squared_exactly():
    y = grid_images(32)
    for d in (0.25, -0.25, 0.5):
        got = mse_per_sample(y + d, y)
        assert got.shape == (2,)
        assert torch.equal(got, torch.full((2,), d * d))


@pytest.mark.parametrize("kind,size", CASES)
def test_identical_images_give_zero(build, kind, size):
    perceptual, _ = build(kind)
    x = images(size)
    assert perceptual.kind == kind
    p = perceptual(x, x.clone())
    assert p.shape == (2,) and p.dtype == torch.float32
    torch.testing.assert_close(p, torch.zeros(2), atol=1e-5, rtol=0)
    c = torch.randn(2, 77, 16)
    loss = fitting_loss(x, x.clone(), c, perceptual)
    torch.testing.assert_close(loss - 0.1 * c.abs().mean(dim=(1, 2)), torch.zeros(2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind,size", CASES)
@pytest.mark.parametrize("alpha,prompt_weight", [(0.8, 0.1), (0.5, 0.3)])
def test_constant_offset_matches_the_formula(build, kind, size, alpha, prompt_weight):
    perceptual, state = build(kind)
    y = grid_images(size)
    d = 0.25
    x = y + d
    c = torch.randn(2, 77, 16)
    loss = fitting_loss(x, y, c, perceptual, alpha=alpha, prompt_weight=prompt_weight)
    p = independent_p(kind, x, y, state)
    if kind != "none":
        assert (p > 1e-4).all(), p  # the perceptual term is really there
    expected = alpha * d * d + (1 - alpha) * p + prompt_weight * c.abs().mean(dim=(1, 2))
    assert loss.shape == (2,)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_official_defaults():
    y = grid_images(32)
    x = y + 0.25
    c = torch.full((77, 16), -2.0)  # one conditioning shared by the batch
    loss = fitting_loss(x, y, c, make_perceptual_loss("none"))
    torch.testing.assert_close(loss, torch.full((2,), 0.8 * 0.0625 + 0.1 * 2.0))


def test_prompt_term_shapes():
    y = grid_images(16, batch=3)
    none = make_perceptual_loss("none")
    base = fitting_loss(y + 0.25, y, None, none)
    torch.testing.assert_close(base, torch.full((3,), 0.8 * 0.0625))
    per_sample = torch.arange(3.0).view(3, 1, 1).expand(3, 4, 5)
    torch.testing.assert_close(fitting_loss(y + 0.25, y, per_sample, none) - base, 0.1 * torch.arange(3.0))
    broadcast = torch.full((1, 4, 5), 3.0)
    torch.testing.assert_close(fitting_loss(y + 0.25, y, broadcast, none) - base, torch.full((3,), 0.3))
    with pytest.raises(ValueError, match="batch"):
        fitting_loss(y, y, torch.zeros(2, 4, 5), none)
    with pytest.raises(ValueError):
        fitting_loss(y, y[:2], None, none)


# ------------------------------------------------------------------------ SSIM / MS-SSIM


@pytest.mark.parametrize("size", [32, 192])
def test_ssim_data_range_on_constant_images(size):
    """Constant images: (MS-)SSIM is its luminance term, computed here by hand.

    x = -0.98 and y = -0.9 in [-1, 1] are 0.01 and 0.05 in [0, 1]; C1 = (0.01 * 1)**2.
    Single-scale: 1 - l. MS-SSIM: every contrast-structure factor is 1, so 1 - l**0.1333.
    Dark values make C1 matter: a data range of 2 on [0, 1] (C1 = 4e-4) would give
    l = 0.467 instead of 0.407, and raw [-1, 1] input a negative l.
    """
    x = torch.full((1, 3, size, size), -0.98)
    y = torch.full((1, 3, size, size), -0.9)
    mu_x, mu_y, c1 = 0.01, 0.05, 0.01**2
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    expected = 1 - (luminance if size < MS_SSIM_MIN_SIDE else luminance**0.1333)
    got = make_perceptual_loss("ms-ssim")(x, y)
    torch.testing.assert_close(got, torch.tensor([expected]), rtol=0, atol=2e-5)


def test_small_images_use_ssim_and_large_ones_ms_ssim():
    perceptual = make_perceptual_loss("ms-ssim")
    assert MS_SSIM_MIN_SIDE == 161
    assert not perceptual.multiscale(32, 32)
    assert not perceptual.multiscale(160, 512)
    assert perceptual.multiscale(161, 161)
    assert perceptual.multiscale(192, 192)
    for size, reference in ((32, pytorch_msssim.ssim), (192, pytorch_msssim.ms_ssim)):
        x, y = images(size, seed=2), images(size, seed=3)
        expected = 1 - reference((x + 1) / 2, (y + 1) / 2, data_range=1.0, size_average=False)
        torch.testing.assert_close(perceptual(x, y), expected)
    # both sides of the threshold run (ms_ssim asserts below it)
    for size in (MS_SSIM_MIN_SIDE - 1, MS_SSIM_MIN_SIDE):
        assert perceptual(images(size), images(size, seed=5)).shape == (2,)
    # non-square: the shorter side decides
    assert perceptual(torch.zeros(1, 3, 64, 256), torch.zeros(1, 3, 64, 256)).shape == (1,)


def test_tiny_images_shrink_the_ssim_window():
    perceptual = make_perceptual_loss("ms-ssim")
    x, y = images(8, seed=1), images(8, seed=2)
    got = perceptual(x, y)
    expected = 1 - pytorch_msssim.ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, size_average=False, win_size=7)
    torch.testing.assert_close(got, expected)


def test_ms_ssim_runs_in_float32_under_autocast():
    perceptual = make_perceptual_loss("ms-ssim")
    x, y = images(32, seed=1), images(32, seed=2)
    plain = perceptual(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = perceptual(x, y)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)


# ------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("kind,size", CASES)
def test_one_gradient_step_toward_the_target_lowers_the_loss(build, kind, size):
    perceptual, _ = build(kind)
    y = images(size, seed=7)
    x = (images(size, seed=8) * 0.5 + y * 0.5).requires_grad_(True)
    c = torch.randn(2, 77, 16, requires_grad=True)
    loss = fitting_loss(x, y, c, perceptual)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(c.grad).all()
    with torch.no_grad():
        step = x - 1e-2 * x.grad / x.grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        after = fitting_loss(step, y, c, perceptual)
    assert (after < loss.detach()).all(), (loss, after)


@pytest.mark.parametrize("kind,size", [("ms-ssim", 32), ("ms-ssim", 192), ("vgg", 32)])
def test_gradients_are_finite_for_unrelated_and_anticorrelated_images(build, kind, size):
    perceptual, _ = build(kind)
    y = torch.rand(2, 3, size, size) * 2 - 1
    for start in (torch.rand(2, 3, size, size) * 2 - 1, -y):
        x = start.clone().requires_grad_(True)
        p = perceptual(x, y)
        p.sum().backward()
        assert torch.isfinite(p).all() and torch.isfinite(x.grad).all()


def test_target_gradient_only_when_asked(build):
    perceptual, _ = build("vgg")
    x = images(32, seed=1).requires_grad_(True)
    y = images(32, seed=2).requires_grad_(True)
    perceptual(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


# ------------------------------------------------------------------------ frozen networks


@pytest.mark.parametrize("kind", ["vgg", "ms-ssim", "none"])
def test_frozen_and_in_eval_mode(build, kind):
    perceptual, _ = build(kind)
    assert isinstance(perceptual, PerceptualLoss)
    assert not any(p.requires_grad for p in perceptual.parameters())
    perceptual.train()
    assert not perceptual.training and not any(m.training for m in perceptual.modules())
    if kind == "vgg":
        assert sum(isinstance(m, nn.Conv2d) for m in perceptual.modules()) == 16


def test_vgg_weights_come_from_the_checkpoint(vgg_hub):
    perceptual = make_perceptual_loss("vgg")
    convs = [m for m in perceptual.modules() if isinstance(m, nn.Conv2d)]
    for index, conv in zip(VGG19_CONV_INDICES, convs):
        assert torch.equal(conv.weight, vgg_hub[f"features.{index}.weight"])


# ------------------------------------------------------------------------ resolution


def test_auto_falls_back_to_ms_ssim_with_a_warning(empty_hub, no_lpips, caplog):
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        perceptual = make_perceptual_loss("auto")
    assert perceptual.kind == "ms-ssim"
    warnings = [r for r in caplog.records if r.name == "libpromptus" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "MS-SSIM" in message and "lpips" in message
    assert "alexnet-owt-7be5be79.pth" in message and str(empty_hub / "checkpoints") in message


def test_auto_takes_the_official_vgg_loss_when_its_weights_are_cached(vgg_hub, no_lpips, caplog):
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        perceptual = make_perceptual_loss("auto")
    assert perceptual.kind == "vgg"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "kind,filename",
    [("lpips", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg19-dcbb9e9d.pth")],
)
def test_missing_weights_are_a_one_line_value_error(empty_hub, kind, filename):
    with pytest.raises(ValueError) as info:
        make_perceptual_loss(kind)
    message = str(info.value)
    assert "\n" not in message
    assert filename in message and str(empty_hub / "checkpoints") in message


def test_lpips_vgg_backbone_names_its_file(empty_hub):
    with pytest.raises(ValueError, match="vgg16-397923af.pth"):
        make_perceptual_loss("lpips", lpips_net="vgg")


def test_missing_lpips_package_is_named(empty_hub, no_lpips):
    (empty_hub / "checkpoints").mkdir()
    (empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        make_perceptual_loss("lpips")
    message = str(info.value)
    assert "\n" not in message and "pip install lpips" in message
    assert "alexnet-owt-7be5be79.pth" not in message  # the file is there: only the package is missing


def test_a_wrong_vgg_checkpoint_is_a_value_error(empty_hub):
    (empty_hub / "checkpoints").mkdir()
    torch.save({"features.0.weight": torch.zeros(1)}, empty_hub / "checkpoints" / "vgg19-dcbb9e9d.pth")
    with pytest.raises(ValueError, match="not a VGG-19 checkpoint") as info:
        make_perceptual_loss("vgg")
    assert "\n" not in str(info.value)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown perceptual loss"):
        make_perceptual_loss("l1")
    assert make_perceptual_loss("MS_SSIM").kind == "ms-ssim"


def test_device_argument_places_the_module(build):
    perceptual, _ = build("vgg")
    assert all(b.device.type == "cpu" for b in perceptual.buffers())
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        on_gpu = make_perceptual_loss("vgg", device="cuda")
        x = images(32).cuda()
        assert on_gpu(x, x).device.type == "cuda"


# ------------------------------------------------------------------------ LPIPS with the real package


def _alexnet_state_dict() -> dict:
    torch.manual_seed(0)
    shapes = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
    state = {}
    for index, (out_c, in_c, k) in shapes.items():
        conv = nn.Conv2d(in_c, out_c, k)
        state[f"features.{index}.weight"] = conv.weight.detach().clone()
        state[f"features.{index}.bias"] = conv.bias.detach().clone()
    return state


def test_lpips_builds_from_the_hub_cache_without_downloading(empty_hub, caplog):
    pytest.importorskip("lpips", reason="the lpips package is not installed (optional; pip install lpips)")
    (empty_hub / "checkpoints").mkdir()
    state = _alexnet_state_dict()
    torch.save(state, empty_hub / "checkpoints" / "alexnet-owt-7be5be79.pth")
    perceptual = make_perceptual_loss("lpips")
    assert perceptual.kind == "lpips"
    assert not any(p.requires_grad for p in perceptual.parameters())
    first_conv = next(m for m in perceptual.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(first_conv.weight, state["features.0.weight"])
    x = images(64, seed=1).requires_grad_(True)
    y = images(64, seed=2)
    torch.testing.assert_close(perceptual(y, y), torch.zeros(2), atol=1e-6, rtol=0)
    p = perceptual(x, y)
    p.sum().backward()
    assert p.shape == (2,) and torch.isfinite(x.grad).all()
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        assert make_perceptual_loss("auto").kind == "lpips"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ------------------------------------------------------------------------ temporal smoothness


def test_temporal_smoothness_of_a_constant_sequence_is_zero():
    c = torch.randn(1, 77, 16).expand(5, 77, 16)
    assert temporal_smoothness(c).item() == 0.0
    assert torch.equal(temporal_smoothness(c, reduction="none"), torch.zeros(4))


def test_temporal_smoothness_hand_computed():
    c = torch.tensor(
        [
            [[0.0, 0.0], [0.0, 0.0]],
            [[1.0, -1.0], [2.0, 0.0]],  # |c1 - c0| = 1, 1, 2, 0 -> 1.0
            [[1.0, 1.0], [2.0, 4.0]],  # |c2 - c1| = 0, 2, 0, 4 -> 1.5
        ]
    )
    torch.testing.assert_close(temporal_smoothness(c, reduction="none"), torch.tensor([1.0, 1.5]))
    torch.testing.assert_close(temporal_smoothness(c), torch.tensor(1.25))
    previous = torch.tensor([[0.0, 0.0], [0.0, 4.0]])  # |c0 - previous| = 0, 0, 0, 4 -> 1.0
    torch.testing.assert_close(temporal_smoothness(c, previous, reduction="none"), torch.tensor([1.0, 1.0, 1.5]))
    torch.testing.assert_close(temporal_smoothness(c, previous), torch.tensor(3.5 / 3))
    assert temporal_smoothness(c[:1]).item() == 0.0
    assert temporal_smoothness(c[:1], reduction="none").shape == (0,)


def test_temporal_smoothness_is_differentiable_and_weights_like_the_paper():
    c = torch.randn(4, 77, 16, requires_grad=True)
    beta = 0.2
    d = torch.rand(4)
    total = beta * d.mean() + (1 - beta) * temporal_smoothness(c)
    total.backward()
    assert torch.isfinite(c.grad).all() and c.grad.abs().sum() > 0
    assert math.isfinite(total.item())
