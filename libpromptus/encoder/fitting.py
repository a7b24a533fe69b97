"""Prompt inversion: fitting one keyframe's low-rank factors by gradient descent.

The paper's sender (SPEC.md's decoding process run backwards): keyframe b's factors
(U_b, V_b) are optimised so that every frame of the interval a+1..b, generated as the
decoder will generate it (interpolated factors, the shared input latent z, 8-bit fake
quantization with a straight-through gradient), matches the source. All frames of the
interval go through the generator as one batch. The best quantized factors seen are kept.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..process.prompts import compose, interpolated_conditioning
from ..process.quantization import fake_quantize


@dataclass(frozen=True)
class FitSettings:
    """Iteration budget and optimiser of one keyframe (official defaults in brackets)."""

    iterations: int                  # [10,000 first keyframe of a scene, 1,500 later ones]
    learning_rate: float = 0.1       # Adam [0.1]
    plateau_window: int = 20         # halve the rate when the best loss has not improved for this many iterations
    min_learning_rate: float = 0.001
    patience: int | None = None      # stop early after this many iterations without improvement
    #: scalable (nested dropout, ScalablePromptus): each iteration after the first keeps a
    #: random rank prefix k in 1..r of the factors (and of the previous keyframe's), so that
    #: every prefix is a usable rung; the kept best and the plateau rule follow the full rank
    nested: bool = False


@dataclass
class FitResult:
    u: torch.Tensor                  # float32 [T, r], the best factors (before final quantization)
    v: torch.Tensor                  # float32 [r, D]
    loss: float
    iterations: int


def interval_prompts(u_b: torch.Tensor, v_b: torch.Tensor, previous: tuple[torch.Tensor, torch.Tensor] | None,
                     steps: list[int], interval: int) -> torch.Tensor:
    """The conditioning [len(steps), T, D] of frames a+s (s in `steps`) as the decoder builds it."""
    if previous is None:
        return compose(u_b, v_b)[None]
    return torch.stack([interpolated_conditioning(previous, (u_b, v_b), step, interval) for step in steps])


def fit_keyframe(forward: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 z: torch.Tensor, targets: torch.Tensor, loss_fn: Callable, *, rank: int, cond_shape: tuple[int, int],
                 previous: tuple[torch.Tensor, torch.Tensor] | None, interval: int, settings: FitSettings,
                 generator: torch.Generator, init: tuple[torch.Tensor, torch.Tensor] | None = None,
                 on_iteration: Callable[[int, float], None] | None = None) -> FitResult:
    """Fit keyframe factors so that `forward(z, prompts)` reproduces `targets` ([-1, 1], [K, 3, H, W]).

    `previous` are keyframe a's dequantized factors (None for a scene's first keyframe,
    whose interval is that one frame); `init` warm-starts from given factors instead of
    the official Uniform[0, 1) initialisation.
    """
    tokens, dim = cond_shape
    device = targets.device
    if init is None:
        u = torch.rand(tokens, rank, generator=generator).to(device)
        v = torch.rand(rank, dim, generator=generator).to(device)
    else:
        u, v = (t.detach().clone().to(device) for t in init)
    u.requires_grad_(True)
    v.requires_grad_(True)
    optimizer = torch.optim.Adam([u, v], lr=settings.learning_rate)
    steps = list(range(1, interval + 1)) if previous is not None else [0]
    batch = z.expand(targets.shape[0], *z.shape[1:])
    best = FitResult(u.detach().clone(), v.detach().clone(), math.inf, 0)
    since_best = 0
    done = 0
    for iteration in range(1, settings.iterations + 1):
        optimizer.zero_grad(set_to_none=True)
        kept = rank
        if settings.nested and iteration > 1:
            kept = int(torch.randint(1, rank + 1, (1,), generator=generator))
        prompts = interval_prompts(fake_quantize(u)[:, :kept], fake_quantize(v)[:kept],
                                   None if previous is None else (previous[0][:, :kept], previous[1][:kept]),
                                   steps, interval)
        _, images = forward(batch, prompts)
        loss = loss_fn(images, targets, prompts).mean()
        value = float(loss.detach())
        full = kept == rank
        if full and value < best.loss:
            best = FitResult(u.detach().clone(), v.detach().clone(), value, iteration - 1)
            since_best = 0
        elif full:
            since_best += 1
        loss.backward()
        optimizer.step()
        done = iteration
        if on_iteration is not None:
            on_iteration(iteration, value)
        if full and since_best and since_best % settings.plateau_window == 0:
            for group in optimizer.param_groups:
                group["lr"] = max(group["lr"] / 2, settings.min_learning_rate)
        if settings.patience is not None and since_best >= settings.patience:
            break
    best.iterations = done
    return best
