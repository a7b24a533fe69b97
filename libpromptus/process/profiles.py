"""Generator profiles: the format-level facts of each registered generator model.

A profile says what a sequence header must declare for a model (latent geometry,
conditioning shape, the noise schedule and the official generation constants) and the
encoder's default iteration budget for it. It holds no weights: the model loaders come with the decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bitstream import NoiseAlgorithm, PredictionType, SequenceHeader


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM noise schedule as diffusers' scheduler configs describe it."""

    beta_start: float
    beta_end: float
    num_train_timesteps: int
    beta_schedule: str = "scaled_linear"

    def alpha_bar(self, timestep: int) -> float:
        """Cumulative product of (1 - beta) up to `timestep`, in binary64.

        SPEC.md stores it in the sequence header as binary32, so decoders never need
        the schedule itself.
        """
        if self.beta_schedule == "scaled_linear":
            betas = np.linspace(self.beta_start ** 0.5, self.beta_end ** 0.5, self.num_train_timesteps,
                                dtype=np.float64) ** 2
        elif self.beta_schedule == "linear":
            betas = np.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=np.float64)
        else:
            raise ValueError(f"unsupported beta schedule {self.beta_schedule!r}")
        return float(np.prod(1.0 - betas[: timestep + 1]))


@dataclass(frozen=True)
class GeneratorProfile:
    """What a stream for this generator declares, with the official defaults."""

    name: str
    latent_channels: int
    latent_downsampling: int
    size_multiple: int
    cond_tokens: int
    cond_dim: int
    schedule: NoiseSchedule
    timestep: int
    prev_weight: float
    noise_weight: float
    noise_seed: int
    prediction_type: PredictionType
    #: the encoder's default budget: iterations for a scene's first keyframe and for later ones
    first_iterations: int
    iterations: int
    #: the encoder's default early stopping: a keyframe's fit ends after this many iterations
    #: without a better loss (None: every fit takes its whole budget)
    patience: int | None = None

    def sequence_header(self, *, width: int, height: int, fps_num: int, fps_den: int, frame_count: int,
                        model_hash: bytes = bytes(32)) -> SequenceHeader:
        """A sequence header for a video of the given size and rate with this generator."""
        return SequenceHeader(
            model_name=self.name, model_hash=model_hash, width=width, height=height,
            fps_num=fps_num, fps_den=fps_den, frame_count=frame_count,
            latent_channels=self.latent_channels, latent_downsampling=self.latent_downsampling,
            size_multiple=self.size_multiple, cond_tokens=self.cond_tokens, cond_dim=self.cond_dim,
            noise_algorithm=NoiseAlgorithm.MT19937_POLAR, noise_seed=self.noise_seed,
            prev_weight=float(np.float32(self.prev_weight)), noise_weight=float(np.float32(self.noise_weight)),
            timestep=self.timestep, alpha_bar=float(np.float32(self.schedule.alpha_bar(self.timestep))),
            prediction_type=self.prediction_type,
        )


#: SD-Turbo (stabilityai/sd-turbo): the SD 2.1 UNet and its scheduler config, with the
#: constants of the official Promptus code (NUMERICS.md): t = 999, z = 0.05·prev + 0.95·noise,
#: noise seed 88. The UNet halves the latent three times, so latents are multiples of 8
#: (64 pixels).
SD_TURBO = GeneratorProfile(
    name="sd-turbo", latent_channels=4, latent_downsampling=8, size_multiple=64,
    cond_tokens=77, cond_dim=1024,
    schedule=NoiseSchedule(beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000),
    timestep=999, prev_weight=0.05, noise_weight=0.95, noise_seed=88,
    prediction_type=PredictionType.EPSILON,
    first_iterations=10_000, iterations=1_500,   # the official budget
    patience=None,                               # until its curves are measured (benchmarks/convergence.py)
)

#: The tiny model's early stopping, read off its convergence curves
#: (benchmarks/results/convergence-cpu.json, README "Measurements").
TINY_PATIENCE = 20

#: The project's test model `tiny` (libpromptus/models/tiny, trained by
#: `python -m libpromptus.models.train_tiny`): SD-Turbo's classes, latent and conditioning
#: at toy size. Its UNet halves the latent once, so latents are multiples of 2 (16
#: pixels). SD-Turbo's schedule, but a single step from t = 49 with that timestep's
#: DDPM mix (sqrt(alpha_bar) = 0.976, sqrt(1 - alpha_bar) = 0.218, rounded to 0.98 and
#: 0.22): a network this small cannot denoise a 4-channel latent through SD-Turbo's
#: 0.05 / 0.95 mix (measured while training it, see train_tiny).
TINY = GeneratorProfile(
    name="tiny", latent_channels=4, latent_downsampling=8, size_multiple=8 * 2 ** 1,
    cond_tokens=77, cond_dim=1024,
    schedule=SD_TURBO.schedule,
    timestep=49, prev_weight=0.98, noise_weight=0.22, noise_seed=88,
    prediction_type=PredictionType.EPSILON,
    first_iterations=300, iterations=100,        # sized for the CPU
    patience=TINY_PATIENCE,
)

PROFILES: dict[str, GeneratorProfile] = {SD_TURBO.name: SD_TURBO, TINY.name: TINY}
