"""The sender's fitting loss: reconstruction + perceptual + prompt regularisation.

The official Promptus code fits each frame with (NUMERICS.md, "Fitting (sender)")::

    0.8 * MSE(x, x_gt) + 0.2 * P(x, x_gt) + 0.1 * mean(|c|)

where P is the mean, over the 16 conv layers of VGG-19, of the MSE between the
feature maps of the two images (ImageNet-normalised input). The paper writes the
same thing as ``D = alpha * D_rec + (1 - alpha) * D_per`` with alpha = 0.8 and LPIPS
as its default D_per, plus an optional temporal term ``beta * D + (1 - beta) *
||c_t - c_{t-1}||`` (beta = 0.2) that the released code does not use.

Images are float [B, 3, H, W] in [-1, 1]; every loss here is per sample, shape [B],
differentiable with respect to ``x``. Perceptual kinds (`PERCEPTUAL_KINDS`):

``"lpips"``
    LPIPS (the ``lpips`` package, AlexNet backbone by default). Needs the package and
    the backbone's torchvision checkpoint already in the torch hub cache
    (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``); the LPIPS linear
    layers ship inside the package.
``"vgg"``
    The official P. Needs ``vgg19-dcbb9e9d.pth`` (torchvision's VGG-19 checkpoint) in
    the torch hub cache; the network is defined here, so torchvision is not needed.
``"ms-ssim"``
    Weight-free ``1 - MS-SSIM`` (package ``pytorch-msssim``) on images mapped to
    [0, 1] with data range 1; ``1 - SSIM`` when the shorter side is below
    `MS_SSIM_MIN_SIDE` (161 px), too small for five scales with an 11-tap window.
``"none"``
    Zeros.
``"auto"``
    lpips if available, else vgg, else ms-ssim (logging a warning on logger
    ``"libpromptus"`` that says where the LPIPS weights go).

Nothing here ever downloads: missing weights are a `ValueError` naming the file and
the folder to put it in.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "MS_SSIM_MIN_SIDE",
    "PERCEPTUAL_KINDS",
    "PerceptualLoss",
    "fitting_loss",
    "hub_checkpoint",
    "make_perceptual_loss",
    "mse_per_sample",
    "prompt_magnitude",
    "temporal_smoothness",
]

log = logging.getLogger("libpromptus")

PERCEPTUAL_KINDS = ("auto", "lpips", "vgg", "ms-ssim", "none")

# torchvision's checkpoint file names (the hub cache keeps the download URL's basename)
LPIPS_BACKBONE_CHECKPOINTS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
VGG19_CHECKPOINT = "vgg19-dcbb9e9d.pth"
_TORCHVISION_MODELS_URL = "https://download.pytorch.org/models/"  # only quoted in messages

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SSIM_WINDOW = 11
# pytorch_msssim.ms_ssim asserts min(H, W) > (win_size - 1) * 2**4 = 160
MS_SSIM_MIN_SIDE = (SSIM_WINDOW - 1) * 2**4 + 1

# VGG-19 "features" (torchvision indexing: conv, ReLU pairs and max-pools); 16 convs
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def hub_checkpoint(filename: str) -> Path:
    """Where torch.hub caches `filename`: ``torch.hub.get_dir()/checkpoints/filename``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _missing_file_text(filename: str) -> str:
    path = hub_checkpoint(filename)
    return f"{filename} in {path.parent} (it is {_TORCHVISION_MODELS_URL}{filename}; nothing is downloaded)"


def _load_checkpoint(path: Path, kind: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"perceptual loss {kind!r}: cannot read {path}: {exc}".replace("\n", " ")) from exc
    if not isinstance(state, dict):
        raise ValueError(f"perceptual loss {kind!r}: {path} is not a state dict")  # noqa: TRY004 - a bad file, not a bad argument
    return state


def _check_images(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.dim() != 4 or x.shape != y.shape:
        raise ValueError(f"expected two image batches [B, C, H, W] of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")


class PerceptualLoss(nn.Module):
    """A frozen per-sample image distance: ``forward(x, y) -> [B]`` for x, y in [-1, 1].

    `kind` is the resolved kind (never ``"auto"``). Frozen: no parameter requires
    grad and the module stays in eval mode (`train` is a no-op), but the output is
    differentiable with respect to the inputs.
    """

    kind: str = "none"

    def freeze(self) -> PerceptualLoss:
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return super().train(False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_images(x, y)
        return self.distance(x, y)

    def distance(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


class NoPerceptualLoss(PerceptualLoss):
    """``"none"``: zeros [B] (no gradient contribution)."""

    kind = "none"

    def distance(self, x, y):
        return x.new_zeros(x.shape[0], dtype=torch.float32)


class MSSSIMLoss(PerceptualLoss):
    """``"ms-ssim"``: ``1 - MS-SSIM`` (``1 - SSIM`` for small images), per sample.

    MS-SSIM's luminance term is not shift invariant, so the [-1, 1] images are mapped
    to [0, 1] and compared with data range 1 (the same numbers as [0, 2] with data range
    2). Computed in float32 with autocast off (SSIM's variance terms are unstable in
    fp16). For images whose shorter side is below `MS_SSIM_MIN_SIDE` (161) the
    five-scale MS-SSIM is undefined for the 11-tap window, so single-scale SSIM is used
    (with the window shrunk to the largest odd size that fits, for sides below 11).
    """

    kind = "ms-ssim"

    def __init__(self):
        super().__init__()
        try:
            import pytorch_msssim  # noqa: F401 - checked here, used in distance()
        except ImportError as exc:
            raise ValueError(
                f"perceptual loss 'ms-ssim' needs the pytorch-msssim package (pip install pytorch-msssim): {exc}"
            ) from exc
        self.freeze()

    @staticmethod
    def multiscale(height: int, width: int) -> bool:
        """Whether an image of this size gets MS-SSIM (else single-scale SSIM)."""
        return min(height, width) >= MS_SSIM_MIN_SIDE

    def distance(self, x, y):
        import pytorch_msssim

        with torch.autocast(device_type=x.device.type, enabled=False):
            a = (x.float() + 1.0) * 0.5
            b = (y.float() + 1.0) * 0.5
            height, width = x.shape[-2:]
            if self.multiscale(height, width):
                similarity = pytorch_msssim.ms_ssim(a, b, data_range=1.0, size_average=False, win_size=SSIM_WINDOW)
            else:
                side = min(height, width)
                window = SSIM_WINDOW if side >= SSIM_WINDOW else max(1, side - (1 - side % 2))
                similarity = pytorch_msssim.ssim(a, b, data_range=1.0, size_average=False, win_size=window)
            return 1.0 - similarity


def _vgg19_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for entry in _VGG19_CFG:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, entry, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
            channels = entry
    return nn.Sequential(*layers)


class VGGFeatureLoss(PerceptualLoss):
    """``"vgg"``: the official P, mean over VGG-19's 16 conv layers of the feature MSE.

    Input is mapped to [0, 1] and ImageNet-normalised; the feature map of a conv layer
    is its output (before the ReLU); each layer's MSE is a mean over channels and
    positions, per sample; P is the plain mean of the 16 layer MSEs. The weights are
    torchvision's ``vgg19-dcbb9e9d.pth`` (only its ``features.*`` tensors are used),
    read from the torch hub cache.
    """

    kind = "vgg"

    def __init__(self, state_dict: dict):
        super().__init__()
        features = _vgg19_features()
        wanted = features.state_dict().keys()
        try:
            features.load_state_dict({key: state_dict[f"features.{key}"] for key in wanted})
        except (KeyError, RuntimeError) as exc:
            raise ValueError(f"perceptual loss 'vgg': {VGG19_CHECKPOINT} is not a VGG-19 checkpoint ({exc})".replace("\n", " ")) from exc
        # drop the trailing ReLU + max-pool: nothing after the 16th conv is used
        last_conv = max(i for i, layer in enumerate(features) if isinstance(layer, nn.Conv2d))
        self.features = features[: last_conv + 1]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.freeze()

    @classmethod
    def from_hub_cache(cls) -> VGGFeatureLoss:
        path = hub_checkpoint(VGG19_CHECKPOINT)
        if not path.is_file():
            raise ValueError(f"perceptual loss 'vgg' is unavailable: missing {_missing_file_text(VGG19_CHECKPOINT)}")
        return cls(_load_checkpoint(path, "vgg"))

    def conv_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 16 conv-layer outputs for images in [-1, 1]."""
        h = ((x + 1.0) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        out = []
        for layer in self.features:
            h = layer(h)
            if isinstance(layer, nn.Conv2d):
                out.append(h)
        return out

    def distance(self, x, y):
        if x.shape[1] != 3:
            raise ValueError(f"perceptual loss 'vgg' needs RGB images, got {x.shape[1]} channels")
        fx = self.conv_features(x)
        with torch.set_grad_enabled(torch.is_grad_enabled() and y.requires_grad):
            fy = self.conv_features(y)
        per_layer = [(a.float() - b.float()).square().flatten(1).mean(1) for a, b in zip(fx, fy)]
        return torch.stack(per_layer, 0).mean(0)


class LPIPSLoss(PerceptualLoss):
    """``"lpips"``: LPIPS v0.1 (the ``lpips`` package), inputs in [-1, 1] as it expects.

    Built with a randomly initialised backbone (so the package never fetches one), whose
    weights are then loaded from torchvision's checkpoint in the torch hub cache; the
    LPIPS linear heads are the ones shipped in the package.
    """

    kind = "lpips"

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_BACKBONE_CHECKPOINTS:
            raise ValueError(f"LPIPS backbone must be one of {sorted(LPIPS_BACKBONE_CHECKPOINTS)}, got {net!r}")
        filename = LPIPS_BACKBONE_CHECKPOINTS[net]
        path = hub_checkpoint(filename)
        missing = []
        try:
            import lpips
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken torchvision underneath
            missing.append(f"the lpips package (pip install lpips; import failed: {exc})".replace("\n", " "))
        if not path.is_file():
            missing.append(_missing_file_text(filename))
        if missing:
            raise ValueError("perceptual loss 'lpips' is unavailable: missing " + "; and ".join(missing))
        state = _load_checkpoint(path, "lpips")
        # pnet_rand=True: the package builds its torchvision backbone without weights
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        backbone = model.net.state_dict()
        try:
            # the package keeps torchvision's indices: slice<k>.<i>.<p> is features.<i>.<p>
            model.net.load_state_dict({key: state["features." + key.split(".", 1)[1]] for key in backbone})
        except (KeyError, IndexError, RuntimeError) as exc:
            raise ValueError(f"perceptual loss 'lpips': {path} does not match the LPIPS {net} backbone ({exc})".replace("\n", " ")) from exc
        self.net_name = net
        self.model = model
        self.freeze()

    def distance(self, x, y):
        if x.shape[1] != 3:
            raise ValueError(f"perceptual loss 'lpips' needs RGB images, got {x.shape[1]} channels")
        return self.model(x, y, normalize=False).reshape(x.shape[0]).float()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, net={self.net_name!r}"


def _normalise_kind(kind: str) -> str:
    name = str(kind).strip().lower().replace("_", "-")
    name = {"msssim": "ms-ssim"}.get(name, name)
    if name not in PERCEPTUAL_KINDS:
        raise ValueError(f"unknown perceptual loss {kind!r}; expected one of {', '.join(PERCEPTUAL_KINDS)}")
    return name


def make_perceptual_loss(kind: str = "auto", device="cpu", *, lpips_net: str = "alex") -> PerceptualLoss:
    """Build the perceptual loss `kind` (see `PERCEPTUAL_KINDS`) on `device`, frozen.

    ``"auto"`` takes LPIPS if the package and the backbone weights are present, else the
    official VGG-19 loss if its weights are present, else 1 - MS-SSIM with a warning on
    the ``"libpromptus"`` logger. Never downloads; an explicitly requested kind that
    cannot be built raises a one-line `ValueError` naming what is missing and where.
    """
    name = _normalise_kind(kind)
    if name == "none":
        loss: PerceptualLoss = NoPerceptualLoss()
    elif name == "ms-ssim":
        loss = MSSSIMLoss()
    elif name == "vgg":
        loss = VGGFeatureLoss.from_hub_cache()
    elif name == "lpips":
        loss = LPIPSLoss(lpips_net)
    else:
        try:
            loss = LPIPSLoss(lpips_net)
        except ValueError as lpips_error:
            try:
                loss = VGGFeatureLoss.from_hub_cache()
                log.info("perceptual loss: LPIPS unavailable, using the official VGG-19 feature loss (%s)", lpips_error)
            except ValueError as vgg_error:
                loss = MSSSIMLoss()
                filename = LPIPS_BACKBONE_CHECKPOINTS[lpips_net]
                log.debug("perceptual loss: %s; %s", lpips_error, vgg_error)
                log.warning(
                    "perceptual loss: no LPIPS or VGG-19 weights, falling back to the weight-free 1 - MS-SSIM; "
                    "for LPIPS (the paper's) pip install lpips and put %s (%s%s) in %s "
                    "(%s there gives the official VGG-19 loss)",
                    filename, _TORCHVISION_MODELS_URL, filename, hub_checkpoint(filename).parent, VGG19_CHECKPOINT,
                )
    return loss.to(device)


def mse_per_sample(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample, [B], in float32."""
    _check_images(x, y)
    return (x.float() - y.float()).square().flatten(1).mean(1)


def prompt_magnitude(prompts, batch: int) -> torch.Tensor:
    """``mean(|c|)`` per sample, [batch] (float32).

    `prompts` is a batch of conditionings [batch, ...] (or [1, ...], broadcast), one
    conditioning [tokens, dim] shared by the whole batch, or None (zeros).
    """
    if prompts is None:
        return torch.zeros(batch)
    c = prompts.float().abs()
    if c.dim() <= 2:
        return c.mean().expand(batch)
    if c.shape[0] not in (1, batch):
        raise ValueError(f"prompts have batch {c.shape[0]}, images have batch {batch}")
    return c.flatten(1).mean(1).expand(batch)


def fitting_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    prompts,
    perceptual: PerceptualLoss,
    *,
    alpha: float = 0.8,
    prompt_weight: float = 0.1,
) -> torch.Tensor:
    """Per-sample fitting loss [B] (official defaults)::

        alpha * MSE(x, y) + (1 - alpha) * perceptual(x, y) + prompt_weight * mean(|c|)

    `x` is the generated batch, `y` the target (both [B, 3, H, W] in [-1, 1]),
    `prompts` the conditionings c (see `prompt_magnitude`; None drops the term).
    """
    _check_images(x, y)
    batch = x.shape[0]
    loss = alpha * mse_per_sample(x, y)
    if alpha != 1.0:
        loss = loss + (1.0 - alpha) * perceptual(x, y).float()
    if prompts is not None and prompt_weight != 0.0:
        loss = loss + prompt_weight * prompt_magnitude(prompts, batch).to(loss.device)
    return loss


def temporal_smoothness(prompts: torch.Tensor, previous: torch.Tensor | None = None, *, reduction: str = "mean") -> torch.Tensor:
    """The paper's temporal term ``||c_t - c_{t-1}||`` as a mean absolute difference.

    `prompts` holds consecutive conditionings [T, ...]; `previous` (optional, [...] or
    [1, ...]) is the conditioning just before them, so that the first one also gets a
    term. ``reduction="none"`` gives one value per transition ([T - 1], or [T] with
    `previous`); ``"mean"`` (default) their mean, a scalar (0 when there is no
    transition). Weighted as ``beta * D + (1 - beta) * temporal_smoothness(c)`` in the
    paper (beta = 0.2); the official code does not use it. (The paper writes an L2 norm;
    the mean absolute difference keeps the term on the scale of ``mean(|c|)``.)
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if prompts.dim() < 1:
        raise ValueError("prompts must have a leading time dimension")
    c = prompts
    if previous is not None:
        prev = previous if previous.dim() == c.dim() else previous.unsqueeze(0)
        c = torch.cat([prev.to(c.dtype), c], 0)
    transitions = c.shape[0] - 1
    if transitions > 0:
        steps = (c[1:] - c[:-1]).abs().reshape(transitions, -1).mean(1)
    else:
        steps = c.new_zeros(0)
    if reduction == "none":
        return steps
    return steps.mean() if steps.numel() else c.new_zeros(())
