"""Train the shipped `tiny` model: `python -m libpromptus.models.train_tiny [--out DIR]`.

`tiny` stands in for SD-Turbo wherever SD-Turbo cannot run: tests, conformance, the CPU
demo. It has SD-Turbo's classes and conditioning (a `UNet2DConditionModel` reading a
77 x 1024 prompt, an `AutoencoderTiny` with TAESD's layout) at a size that trains in
minutes on two CPU cores, and it is trained so that Promptus' encoder has something to
steer: the decoded frame depends on the prompt, and fitting the prompt moves the frame
towards the source.

The recipe, in two stages, on procedural clips only (`libpromptus.models.procedural`, seeds
0 .. TRAIN_CLIPS-1; benchmarks and tests hold out seeds from HELD_OUT_SEED up):

1. Autoencoder. Encoder and decoder are trained together on random 64 x 64 crops
   (pixel MSE). Latents are kept near unit scale (a penalty on their mean square above 1,
   as SD's scaled latents are), so that they never reach the decoder's `tanh(x/3)*3`
   clamp; Gaussian noise on the latent during training makes the decoder tolerate the
   imperfect latents a generator produces.

2. Generator. The autoencoder is frozen. The UNet is trained as Promptus uses it: a
   single denoising step from the input latent `z = prev_weight * P + noise_weight * N`
   to the latent of the current frame, with epsilon prediction at the profile's
   timestep, over two chained intervals: frames a <= b <= c of one scene (0 to 10
   frames apart, as in intervals), b generated from the latent of a, then c from that
   output with the same N, as the decoder chains intervals with one stream-wide noise
   tensor (without this the UNet's residue piles up from interval to interval). Half of
   the time frame a is colour-shifted first (a global gain and offset, like a fade): a
   change the previous latent does not carry, so the prompt has to.
   The prompt comes from a throw-away prompt network that sees the target latent and
   the previous one and emits rank-r factors (U, V), r drawn from {1, 2, 4, 8, 16}, in
   the mean and spread of the encoder's Uniform[0, 1) initialisation, composed as U V / sqrt(r)
   after the codec's own 8-bit fake quantization: the UNet learns to read exactly the
   kind of prompt the encoder can transmit and starts from. The loss is latent MSE plus
   pixel MSE through the frozen decoder. Only the UNet and the decoder ship; the prompt
   network is discarded, and the encoder finds prompts by gradient descent as it does
   for SD-Turbo.

Why not SD-Turbo's constants: at t = 999 with 0.05 / 0.95 the generated latent is
dominated by 14.6 z and saturates the decoder, and a network of this size could not be
trained to denoise a 4-channel latent even at t = 399 or 99 (measured: the noise
pattern stays in the frames and, since every interval reuses the same noise tensor,
piles up along the chain). `tiny` declares t = 49 and that timestep's mix, 0.98 / 0.22,
in its sequence headers (profiles.TINY); SD-Turbo streams keep the official values.
The price: the prompt of a model this small steers global appearance (colour, light,
texture), not layout, so moving objects are only followed as far as the noisy previous
latent carries them (README, "The tiny model").

Determinism: every random draw comes from generators seeded by `--seed`, torch runs with
deterministic algorithms and a fixed thread count, so a rerun on the same machine,
torch version and `--threads` gives the same weights. Across CPUs and library versions
float summation order differs, so the committed weights are the reference, pinned by
MANIFEST.json and SPEC.md Annex A; CI never trains.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..process.quantization import fake_quantize
from ..process.profiles import TINY
from . import tiny_model
from .procedural import random_clip

#: Clips 0 .. TRAIN_CLIPS-1 train; HELD_OUT_SEED and up are never seen in training.
TRAIN_CLIPS = 96
HELD_OUT_SEED = 1_000_000
CLIP_FRAMES = 40
CLIP_SIZE = 128
CROP = 64
RANKS = (1, 2, 4, 8, 16)
MAX_GAP = 10


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run (recorded in the manifest)."""

    seed: int = 20250
    clips: int = TRAIN_CLIPS
    ae_steps: int = 3000
    ae_batch: int = 16
    ae_lr: float = 1e-3
    latent_noise: float = 0.1
    gen_steps: int = 1500
    gen_batch: int = 24
    gen_lr: float = 2e-3
    pixel_weight: float = 1.0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def training_frames(clips: int = TRAIN_CLIPS) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """(uint8 [N, 3, 128, 128] frames of the training clips, [start, stop) of each scene)."""
    frames, scenes = [], []
    for seed in range(clips):
        clip, starts = random_clip(seed, CLIP_FRAMES, CLIP_SIZE, CLIP_SIZE)
        base = len(frames)
        frames.extend(clip)
        bounds = [*starts, len(clip)]
        scenes.extend((base + a, base + b) for a, b in itertools.pairwise(bounds))
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous(), scenes


def _to_signed(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


def _cosine(step: int, total: int, peak: float) -> float:
    warm = min(1.0, (step + 1) / 100)
    return peak * warm * 0.5 * (1 + math.cos(math.pi * step / total))


def _offsets(g: torch.Generator, count: int, full: int, size: int) -> list[tuple[int, int]]:
    """`count` random (y, x) crop offsets of a `size` window in a `full` square, multiples of 2."""
    ys = torch.randint(0, (full - size) // 2 + 1, (count,), generator=g) * 2
    xs = torch.randint(0, (full - size) // 2 + 1, (count,), generator=g) * 2
    return list(zip(ys.tolist(), xs.tolist()))


def _crop(images: torch.Tensor, offsets: list[tuple[int, int]], size: int, scale: int = 1) -> torch.Tensor:
    """Crop image i at offsets[i] * scale to `size` * scale pixels (the same window in latent and pixel units)."""
    return torch.stack([img[..., y * scale:(y + size) * scale, x * scale:(x + size) * scale]
                        for img, (y, x) in zip(images, offsets)])


def latent_penalty(latents: torch.Tensor) -> torch.Tensor:
    """Keeps latents near SD's unit scale: the mean square above 1, squared."""
    return F.relu(latents.pow(2).mean() - 1.0) ** 2 + F.relu(latents.abs() - 2.5).pow(2).mean()


def initialise_autoencoder(vae) -> None:
    """He-normal convolutions, and each residual block's last convolution at zero.

    TAESD's blocks are plain ReLU convolutions without normalisation, about twenty deep;
    with torch's default init the signal fades through them and training sits at the
    mean image for hundreds of steps. Starting every block as the identity fixes that.
    """
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
    for module in vae.modules():
        if type(module).__name__ == "AutoencoderTinyBlock":
            torch.nn.init.zeros_(module.conv[-1].weight)


def train_autoencoder(vae, frames: torch.Tensor, recipe: Recipe, g: torch.Generator) -> None:
    initialise_autoencoder(vae)
    optimizer = torch.optim.Adam(vae.parameters(), lr=recipe.ae_lr)
    started = time.monotonic()
    for step in range(recipe.ae_steps):
        for group in optimizer.param_groups:
            group["lr"] = _cosine(step, recipe.ae_steps, recipe.ae_lr)
        pick = torch.randint(0, frames.shape[0], (recipe.ae_batch,), generator=g)
        x = _to_signed(_crop(frames[pick], _offsets(g, recipe.ae_batch, CLIP_SIZE // 8, CROP // 8), CROP // 8, 8))
        latents = vae.encoder(x)
        noisy = latents + recipe.latent_noise * torch.randn(latents.shape, generator=g)
        loss = F.mse_loss(vae.decoder(noisy), x)
        total = loss + latent_penalty(latents)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        if step % 250 == 0 or step == recipe.ae_steps - 1:
            psnr = 10 * math.log10(4.0 / max(loss.item(), 1e-12))
            _log(f"autoencoder {step:5d}/{recipe.ae_steps}  mse {loss.item():.5f} ({psnr:.2f} dB)  "
                 f"latent rms {latents.pow(2).mean().sqrt().item():.2f}  {time.monotonic() - started:.0f}s")


class PromptNetwork(torch.nn.Module):
    """Training-only: (current latent, previous latent) -> rank-r factors U [77, r], V [r, 1024]."""

    def __init__(self, tokens: int, dim: int, max_rank: int, width: int = 96) -> None:
        super().__init__()
        self.tokens, self.dim, self.max_rank = tokens, dim, max_rank
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(8, width, 3, padding=1), torch.nn.SiLU(),
            torch.nn.Conv2d(width, width, 3, padding=1, stride=2), torch.nn.SiLU(),
            torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Linear(3 * width, 512), torch.nn.SiLU(),
                                        torch.nn.Linear(512, max_rank * (tokens + dim)))

    def forward(self, current: torch.Tensor, previous: torch.Tensor, rank: int) -> torch.Tensor:
        f = self.features(torch.cat([current, previous], 1))
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3)), f.std((2, 3))], 1)
        out = self.head(pooled)
        u = out[:, : self.tokens * self.max_rank].view(-1, self.tokens, self.max_rank)[..., :rank]
        v = out[:, self.tokens * self.max_rank:].view(-1, self.max_rank, self.dim)[:, :rank]
        # factors with the mean and spread of the encoder's Uniform[0, 1) initialisation (0.5,
        # 0.29): a fit starts from a prompt of the kind the UNet was trained on. Normalised,
        # not squashed: with a sigmoid the factors collapsed to 0 and the UNet learned to
        # ignore the prompt
        u = 0.5 + 0.29 * (u - u.mean((1, 2), keepdim=True)) / (u.std((1, 2), keepdim=True) + 1e-5)
        v = 0.5 + 0.29 * (v - v.mean((1, 2), keepdim=True)) / (v.std((1, 2), keepdim=True) + 1e-5)
        prompts = [fake_quantize(ui) @ fake_quantize(vi) / math.sqrt(rank) for ui, vi in zip(u, v)]
        return torch.stack(prompts)


def _chains(scenes: list[tuple[int, int]], count: int, g: torch.Generator) -> torch.Tensor:
    """`count` frame triples (a, b, c) inside one scene, a <= b <= c, each step 0 .. MAX_GAP frames."""
    picks = torch.randint(0, len(scenes), (count,), generator=g).tolist()
    gaps = torch.randint(0, MAX_GAP + 1, (count, 2), generator=g).tolist()
    chains = []
    for scene, (first_gap, second_gap) in zip(picks, gaps):
        start, stop = scenes[scene]
        span = min(first_gap + second_gap, stop - start - 1)
        first_gap = min(first_gap, span)
        a = start + int(torch.randint(0, stop - start - span, (1,), generator=g))
        chains.append((a, a + first_gap, a + span))
    return torch.tensor(chains)


def _colour_shift(pixels: torch.Tensor, g: torch.Generator, probability: float = 0.5) -> torch.Tensor:
    """A random global per-channel gain and offset on about half the images ([-1, 1] in and out).

    Applied to the previous frame only, it is a change (a fade, a lighting change) that
    the previous latent does not carry and the prompt must: the UNet learns to take the
    image's global colour from the prompt.
    """
    n = pixels.shape[0]
    gain = torch.empty(n, 3, 1, 1).uniform_(0.6, 1.4, generator=g)
    offset = torch.empty(n, 3, 1, 1).uniform_(-0.3, 0.3, generator=g)
    chosen = (torch.rand(n, 1, 1, 1, generator=g) < probability).float()
    shifted = ((pixels + 1) / 2 * gain + offset).clamp(0, 1) * 2 - 1
    return chosen * shifted + (1 - chosen) * pixels


class _Step:
    """One single-step generation as the decoder runs it, with the frozen decoder for the pixel loss."""

    def __init__(self, unet, vae, batch: int) -> None:
        self.unet, self.vae = unet, vae
        self.alpha_bar = TINY.schedule.alpha_bar(TINY.timestep)
        self.timesteps = torch.full((batch,), TINY.timestep)

    def __call__(self, previous: torch.Tensor, noise: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        z = TINY.prev_weight * previous + TINY.noise_weight * noise
        eps = self.unet(z, self.timesteps, encoder_hidden_states=prompts).sample
        return (z - math.sqrt(1 - self.alpha_bar) * eps) / math.sqrt(self.alpha_bar)


def train_generator(unet, vae, frames: torch.Tensor, scenes, recipe: Recipe, g: torch.Generator) -> None:
    """Stage 2: the UNet (and the throw-away prompt network) over two chained intervals.

    Each sample is a chain of three frames a <= b <= c of one scene. Step one generates b
    from the (colour-shifted, encoded) latent of a; step two generates c from step one's
    own output, with the same noise tensor, as the decoder chains intervals with one
    stream-wide noise tensor: the UNet learns to correct its own residue instead of
    letting it pile up from interval to interval.
    """
    prompt_net = PromptNetwork(TINY.cond_tokens, TINY.cond_dim, max(RANKS))
    parameters = [*unet.parameters(), *prompt_net.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=recipe.gen_lr)
    step_once = _Step(unet, vae, recipe.gen_batch)
    lat_crop = CROP // 8
    started = time.monotonic()
    for step in range(recipe.gen_steps):
        for group in optimizer.param_groups:
            group["lr"] = _cosine(step, recipe.gen_steps, recipe.gen_lr)
        chains = _chains(scenes, recipe.gen_batch, g)
        windows = _offsets(g, recipe.gen_batch, CLIP_SIZE // 8, lat_crop)
        pixels = [_to_signed(_crop(frames[chains[:, k]], windows, lat_crop, 8)) for k in range(3)]
        with torch.no_grad():
            start = vae.encoder(_colour_shift(pixels[0], g))
            targets = [vae.encoder(pixels[1]), vae.encoder(pixels[2])]
        noise = torch.randn(start.shape, generator=g)
        rank = RANKS[int(torch.randint(0, len(RANKS), (1,), generator=g))]
        previous, latent_loss, pixel_loss = start, 0.0, 0.0
        for target_latent, target_pixels in zip(targets, pixels[1:]):
            prompts = prompt_net(target_latent, previous, rank)
            x0 = step_once(previous, noise, prompts)
            latent_loss = latent_loss + F.mse_loss(x0, target_latent) / 2
            pixel_loss = pixel_loss + F.mse_loss(vae.decoder(x0), target_pixels) / 2
            previous = x0
        loss = latent_loss + recipe.pixel_weight * pixel_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        if step % 100 == 0 or step == recipe.gen_steps - 1:
            psnr = 10 * math.log10(4.0 / max(pixel_loss.item(), 1e-12))
            _log(f"generator {step:5d}/{recipe.gen_steps}  latent mse {latent_loss.item():.4f}  pixel mse "
                 f"{pixel_loss.item():.5f} ({psnr:.2f} dB)  |c| {prompts.abs().mean().item():.3f}  "
                 f"{time.monotonic() - started:.0f}s")


def train(recipe: Recipe, autoencoder: Path | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The trained tiny model's float16 state dicts {"unet": ..., "vae": ...}.

    `autoencoder`: a tiny model folder whose trained autoencoder is reused (stage 1 skipped).
    """
    torch.manual_seed(recipe.seed)
    g = torch.Generator().manual_seed(recipe.seed)
    unet, vae = tiny_model.build()
    frames, scenes = training_frames(recipe.clips)
    _log(f"{frames.shape[0]} training frames in {len(scenes)} scenes")
    if autoencoder is None:
        train_autoencoder(vae, frames, recipe, g)
    else:
        from safetensors.torch import load_file

        vae.load_state_dict({k: v.float() for k, v in load_file(autoencoder / "vae" / tiny_model.WEIGHTS).items()})
    vae.requires_grad_(False)
    # stage 2 draws from its own seeds, so reusing a stage-1 result gives the same generator
    torch.manual_seed(recipe.seed + 1)
    g.manual_seed(recipe.seed + 1)
    # the decoder ships as float16: train the generator against the rounded decoder
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(p.half().float())
    train_generator(unet, vae, frames, scenes, recipe, g)
    return {"unet": {k: v.detach().half() for k, v in unet.state_dict().items()},
            "vae": {k: v.detach().half() for k, v in vae.state_dict().items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libpromptus.models.train_tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=tiny_model.DEFAULT_OUT,
                        help=f"output folder (default: {tiny_model.DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=Recipe.seed)
    parser.add_argument("--ae-steps", type=int, default=Recipe.ae_steps)
    parser.add_argument("--gen-steps", type=int, default=Recipe.gen_steps)
    parser.add_argument("--clips", type=int, default=Recipe.clips, help="training clips (seeds 0 .. N-1)")
    parser.add_argument("--autoencoder", type=Path, default=None, metavar="DIR",
                        help="reuse the trained autoencoder of this tiny model folder (skips stage 1)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (part of what makes a run repeatable)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    recipe = Recipe(seed=args.seed, clips=args.clips, ae_steps=args.ae_steps, gen_steps=args.gen_steps)
    started = time.monotonic()
    states = train(recipe, args.autoencoder)
    minutes = (time.monotonic() - started) / 60
    manifest = tiny_model.write(args.out, states, training={**asdict(recipe), "threads": args.threads,
                                                          "autoencoder_reused": args.autoencoder is not None,
                                                          "torch": torch.__version__, "minutes": round(minutes, 1)})
    print(json.dumps({"out": str(args.out), "identity": manifest["identity"], "minutes": round(minutes, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
