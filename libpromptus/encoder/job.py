"""The encode job: a video file or pipe in, a finished `.pmt` file out.

`encode` reads the input (`io.video_input`), sets up the model, engine and rate
control (`EncoderSetup`, shared with the write mode of `libpromptus.open`), runs the
`Encoder` over the frames in a locked work folder beside the output with a checkpoint
after every keyframe, and renames the stream into place when it is complete. A
segmented encode (`encoder.segments`) runs one such encode per segment and merges them.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, TextIO

from .. import __version__
from ..bitstream import (
    Coding,
    LatentCodec,
    Metadata,
    SequenceHeader,
    StreamWriter,
    minor_version_of,
    read_streams,
)
from ..bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_RANK
from ..errors import CheckpointError
from ..io.files import WorkDirectory, publish
from .checkpoint import Checkpoint
from ..process.quantization import DEFAULT_LATENT_STEP
from .encoder import Encoder, EncoderSettings, EncodeSummary, KeyframeReport, stats_psnr
from . import rdo
from .ratecontrol import LOOKAHEAD, OFFICIAL_INTERVAL, OFFICIAL_RANK, RateController
from .rdo import Decision

log = logging.getLogger("libpromptus")

#: An encode's files in its work folder (`io.files.WorkDirectory`): the partial stream and its checkpoint.
_STREAM, _CHECKPOINT = "stream.partial", "checkpoint.npz"
#: The engine the encoder fits through: its `forward` is differentiable on every device.
FITTING_ENGINE = "torch"


@dataclass(frozen=True)
class EncodeOptions:
    """How to encode: everything `encode` accepts besides its input, output and callbacks."""

    model: str | None = None               # default: $PROMPTUS_MODEL, else sd-turbo
    bitrate: float | None = None           # bits per second (-b:v); chooses rank and interval
    rank: int | None = None                # --rank (overrides the rate control's choice)
    interval: int | None = None            # -g
    first_iterations: int | None = None    # default: the model profile's (official 10,000 for sd-turbo)
    iterations: int | None = None          # default: the model profile's (official 1,500 for sd-turbo)
    scene_threshold: float | None = 0.3    # None: no scene detection
    latent_codec: str = "dct8"
    latent_step: float = DEFAULT_LATENT_STEP  # DCT8 step, times each latent channel's standard deviation
    coding: str = "entropy"
    perceptual: str = "auto"
    alpha: float = 0.8
    warm_start: bool = False
    temporal_beta: float | None = None     # the paper's temporal smoothing (beta 0.2 there); None: off
    patience: int | None = None            # early stopping: iterations without improvement; None: the
                                           # model's default (tiny: profiles.TINY_PATIENCE; sd-turbo: off); 0: off
    scalable: bool = False                 # nested dropout: every rank prefix of a keyframe is a usable rung
    decisions: str = "trial"               # with -b:v: "trial" (rate-distortion trials, encoder.rdo) or "formula"
    keyframes: str = "adaptive"            # "adaptive" (by content, when the trials measure it better) or "uniform"
    lookahead: int = LOOKAHEAD             # frames the trials encode (-rc-lookahead)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"                # auto: bf16 on CUDA, fp32 on the CPU
    size: tuple[int, int] | None = None    # -s
    fit: str = "crop"
    rate: Fraction | None = None           # -r
    start: float | None = None             # -ss
    duration: float | None = None          # -t
    max_frames: int | None = None          # -frames:v


#: The options that say how the input is read, not how it is coded (the write mode takes frames instead).
INPUT_OPTIONS = ("size", "fit", "rate", "start", "duration", "max_frames")


@dataclass(frozen=True)
class EncodeResult:
    """What an encode produced; `summary` has the per-keyframe reports."""

    frames: int
    bytes: int
    bitrate_bps: float
    rank: int
    interval: int
    summary: EncodeSummary

    @classmethod
    def of(cls, summary: EncodeSummary, rate: Fraction, rank: int, interval: int) -> EncodeResult:
        """The result of an encode whose `summary` is final, at frame `rate`."""
        duration = summary.frames / rate
        return cls(summary.frames, summary.bytes, float(summary.bytes * 8 / duration), rank, interval, summary)


class EncoderSetup:
    """An encode's model, header, engine, rate control and settings, decided before its first frame.

    `frame_count` is the input's length, None when unknown (a pipe, a live source).
    """

    def __init__(self, opts: EncodeOptions, *, width: int, height: int, rate: Fraction,
                 frame_count: int | None) -> None:
        from ..engines import create_engine
        from ..models import load_generator, load_latent_encoder
        from .losses import make_perceptual_loss

        self.options = opts
        self.frame_count = frame_count
        self.generator = generator = load_generator(opts.model)
        self.latent_encoder = load_latent_encoder(opts.model)
        profile = generator.profile
        self.header = profile.sequence_header(width=width, height=height, fps_num=rate.numerator,
                                              fps_den=rate.denominator, frame_count=frame_count or 0,
                                              model_hash=generator.identity())
        self.rate_control = None if opts.bitrate is None else RateController(
            opts.bitrate, self.header, frames=frame_count, latent_codec=opts.latent_codec)
        self.rank, self.interval = self._rank_and_interval()
        self.precision = _fitting_precision(opts)
        self.engine = create_engine(FITTING_ENGINE, generator, self.header, device=opts.device,
                                    precision=self.precision)
        self.latent_encoder.module.to(self.engine.device)
        self.settings = EncoderSettings(
            rank=self.rank, interval=self.interval,
            first_iterations=profile.first_iterations if opts.first_iterations is None else opts.first_iterations,
            iterations=profile.iterations if opts.iterations is None else opts.iterations,
            alpha=opts.alpha, scene_threshold=opts.scene_threshold,
            latent_codec=LatentCodec[opts.latent_codec.upper()], latent_step=opts.latent_step,
            coding=Coding[opts.coding.upper()],
            warm_start=opts.warm_start, temporal_beta=opts.temporal_beta, patience=_patience(opts, profile),
            seed=opts.seed, scalable=opts.scalable)
        self.perceptual = make_perceptual_loss(opts.perceptual, self.engine.device)
        self.decision: Decision | None = None
        if opts.decisions not in ("trial", "formula"):
            raise ValueError(f"--decisions {opts.decisions}: choose trial or formula")
        if opts.keyframes not in ("adaptive", "uniform"):
            raise ValueError(f"--keyframes {opts.keyframes}: choose adaptive or uniform")
        if opts.lookahead < 1:
            raise ValueError(f"-rc-lookahead {opts.lookahead}: at least 1 frame")

    @property
    def trials_decide(self) -> bool:
        """Whether rate-distortion trials choose rank and interval: -b:v without --rank or -g, --decisions trial."""
        opts = self.options
        return opts.bitrate is not None and opts.rank is None and opts.interval is None and opts.decisions == "trial"

    @property
    def max_interval(self) -> int:
        return MAX_KEYFRAME_INTERVAL if self.rate_control is None else self.rate_control.max_interval

    @property
    def stream_minor_version(self) -> int:
        """The `version_minor` of the streams this setup writes (the lowest their units need)."""
        return minor_version_of(self.settings.keyframe_coding, self.settings.latent_codec)

    def decide(self, window: list) -> None:
        """Choose rank, interval, refresh and placement by trial encodes of `window`, the
        input's first frames (`rdo.decide`); nothing unless `trials_decide`."""
        if not self.trials_decide or not window:
            return
        decision = rdo.decide(self, window, frames=self.rate_control.planned_frames,
                              adaptive=self.options.keyframes == "adaptive")
        chosen = decision.chosen.candidate
        self.decision = decision
        self.rank, self.interval = chosen.rank, chosen.interval
        self.settings = replace(self.settings, rank=chosen.rank, interval=chosen.interval, refresh=chosen.refresh,
                                latent_step=decision.latent_step)

    def _rank_and_interval(self) -> tuple[int, int]:
        """--rank/-g as given; otherwise the rate control's choice for -b:v; else the official 8 and 10."""
        opts = self.options
        if self.rate_control is None:
            rank, interval = opts.rank or OFFICIAL_RANK, opts.interval or OFFICIAL_INTERVAL
        else:
            self.rate_control.warn_if_below_floor()
            choice = self.rate_control.choose()
            rank, interval = opts.rank or choice.rank, opts.interval or choice.interval
        header = self.header
        max_rank = min(header.cond_tokens, header.cond_dim, MAX_RANK)
        if not 1 <= rank <= max_rank:
            raise ValueError(f"--rank {rank}: model {self.generator.name} allows ranks 1..{max_rank}")
        if not 1 <= interval <= MAX_KEYFRAME_INTERVAL:
            raise ValueError(f"-g {interval}: keyframe intervals are 1..{MAX_KEYFRAME_INTERVAL}")
        return rank, interval

    def metadata(self) -> Metadata:
        """The metadata unit every stream of this setup starts with: the encoder and its settings."""
        settings, opts = self.settings, self.options
        return Metadata((("encoder", f"libpromptus {__version__}"),
                         ("settings", f"model={self.generator.name} rank={self.rank} interval={self.interval} "
                                      + ("refresh " if settings.refresh else "")
                                      + ("keyframes=adaptive " if self.decision and self.decision.placement else "")
                                      + f"iterations={settings.first_iterations}/{settings.iterations} "
                                      f"latent_codec={opts.latent_codec}"
                                      + (f" latent_step={settings.latent_step:g}" if opts.latent_codec == "dct8" else "")
                                      + f" perceptual={self.perceptual.kind} "
                                      f"seed={opts.seed}" + (" scalable" if opts.scalable else ""))))

    def encoder(self, writer: StreamWriter, **callbacks) -> Encoder:
        """An `Encoder` writing to `writer`, the interval adapted to -b:v unless -g fixed it;
        `callbacks`: `Encoder`'s `stats`, `on_iteration`, `on_keyframe`, `on_checkpoint`."""
        adapting = None if self.options.interval is not None else self.rate_control
        placement = None if self.decision is None else self.decision.placement
        return Encoder(writer, self.engine, self.latent_encoder, self.perceptual, self.settings,
                       rate_control=adapting, planned_cuts=() if self.decision is None else self.decision.cuts,
                       placement=placement, **callbacks)

    def open(self, sink: BinaryIO, **callbacks) -> Encoder:
        """Start a new stream in `sink`: its prefix, header and metadata are written at once."""
        writer = StreamWriter(sink, self.header, minor=self.stream_minor_version)
        writer.write(self.metadata())
        return self.encoder(writer, **callbacks)


def _patience(opts: EncodeOptions, profile) -> int | None:
    """--patience as given (0: off), else the model's default."""
    if opts.patience is None:
        return profile.patience
    if opts.patience < 0:
        raise ValueError(f"--patience {opts.patience}: iterations without a better loss, 0 (off) or more")
    return opts.patience or None


def _fitting_precision(opts: EncodeOptions) -> str:
    """`auto` fits in bf16 on CUDA (fp16's range is too narrow for the gradients) and fp32 on the CPU."""
    if opts.precision != "auto":
        return opts.precision
    from ..engines.torch_engine import pick_device

    return "bf16" if pick_device(opts.device).type == "cuda" else "fp32"


def encode(source: str, output: str, *, overwrite: bool = False, resume: bool = False,
           threads: int | None = None, stats: TextIO | None = None,
           on_start: Callable[[int | None, Fraction], None] | None = None,
           on_iteration: Callable[[int, int, float], None] | None = None,
           on_keyframe: Callable[[KeyframeReport], None] | None = None, **options) -> EncodeResult:
    """Encode a video (any input PyAV reads) into a .pmt file; `options`: see `EncodeOptions`.

    The encode holds `.OUTPUT.resume/` beside the output under an exclusive lock (a
    second encode of the same output raises `OutputBusyError` at once), writes the
    stream there with a checkpoint after every keyframe, and renames it to `output` when
    complete: a failure never leaves a partial file under the output name. After an
    interruption (Ctrl-C, a killed process) `resume=True` continues from the last
    finished keyframe and gives the same bytes as an uninterrupted run, or refuses in
    one line when the checkpoint does not match; any other failure removes the folder.
    `threads`: torch's CPU threads for this encode (default: torch's own choice).
    With a bitrate and no rank or interval, rate-distortion trials decide them (`rdo`):
    the candidates that fit the bitrate are trial-encoded on the first `lookahead` frames
    and the one of least measured distortion is used (the Lagrangian choice at the λ where
    the rate constraint binds); `decisions="formula"` keeps the byte model's choice.
    Callbacks: `on_start(frame_count or None, rate)`, `on_iteration(keyframe, iteration,
    loss)`, `on_keyframe(KeyframeReport)`.
    """
    opts = EncodeOptions(**options)
    target = Path(output)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (use -y to overwrite)")
    callbacks = dict(stats=stats, on_start=on_start, on_iteration=on_iteration, on_keyframe=on_keyframe)
    with naming_failed_writes(output), WorkDirectory(target) as work, torch_threads(threads):
        # the work folder first, so that a second encode of `output` fails at once
        return _encode_in(work, source, target, opts, resume, callbacks)


@contextmanager
def naming_failed_writes(output: str) -> Iterator[None]:
    """Make a failed write (a full disk: an `OSError` without a file name) name `output`."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, output) from None
        raise


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with torch's intra-op CPU threads set to `threads` (None: as they are), restored afterwards.

    The thread count is part of what a CPU fit's bytes depend on (the order of its
    parallel reductions), so segment encodes that must agree set it explicitly."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise ValueError(f"-threads {threads}: at least 1")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_in(work: WorkDirectory, source: str, target: Path, opts: EncodeOptions, resume: bool,
               callbacks: dict) -> EncodeResult:
    """The encode without segments in `work` (held): afresh, or resumed from its checkpoint."""
    resumed = None
    if resume:
        checkpoint = _checkpoint_to_resume(work, source, opts)
        partial = work.path / _STREAM
        if not partial.exists():
            return _finished_result(target, checkpoint, work)
        resumed = checkpoint, checkpoint.check_stream(partial.read_bytes(), str(partial))
    else:
        _discard_interrupted(work)
    try:
        return _encode_whole(source, target, work, opts, resumed, **callbacks)
    except KeyboardInterrupt:
        if not (work.path / _CHECKPOINT).exists():
            work.remove()
        raise
    except BaseException:
        work.remove()
        raise


def _checkpoint_to_resume(work: WorkDirectory, source: str, opts: EncodeOptions) -> Checkpoint:
    """The interrupted encode's checkpoint, checked against this encode's input and options."""
    path = work.path / _CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{work.target}: nothing to resume (no checkpoint in {work.path})")
    checkpoint = Checkpoint.load(path)
    if checkpoint.fingerprint != fingerprint(source, opts):
        raise CheckpointError(f"{work.target}: the input or options differ from the interrupted encode; "
                              "start again without --resume")
    return checkpoint


def _discard_interrupted(work: WorkDirectory) -> None:
    """Start afresh in `work`, saying so if an interrupted encode's files are thrown away."""
    if work.files():
        log.warning("discarding the interrupted encode in %s (--resume continues it)", work.path)
        work.clear()


def _finished_result(target: Path, checkpoint: Checkpoint, work: WorkDirectory) -> EncodeResult:
    """`--resume` after a kill between the final rename and the clean-up: the output is already complete.

    It is recognised by the checkpoint's stream prefix; anything else is refused.
    """
    try:
        data = target.read_bytes()
        checkpoint.check_stream(data, str(target))
        stream = read_streams(io.BytesIO(data))[0]
    except (OSError, ValueError):
        raise CheckpointError(f"{target}: the checkpoint in {work.path} has lost its partial stream; "
                              "start again without --resume") from None
    log.info("%s: the interrupted encode had already finished; nothing to resume", target)
    work.remove()
    keyframes = [KeyframeReport(**k) for k in checkpoint.state["keyframes"]]
    summary = EncodeSummary(stream.frame_count, checkpoint.state["scenes"], keyframes, len(data),
                            list(checkpoint.state["cuts"]))
    return EncodeResult.of(summary, _rate(stream.header), checkpoint.rank, checkpoint.interval)


def _rate(header: SequenceHeader) -> Fraction:
    return Fraction(header.fps_num, header.fps_den)


class _CheckpointedStream:
    """The partial stream in the work folder and the checkpoints that pin it.

    Each checkpoint is saved after the stream's bytes are durable, with their length and
    running SHA-256, in one atomic rename (`Checkpoint.save`).
    """

    def __init__(self, handle: BinaryIO, path: Path, fingerprint: str, rank: int, interval: int) -> None:
        self.handle, self.path = handle, path
        self.fingerprint, self.rank, self.interval = fingerprint, rank, interval
        self.writer: StreamWriter | None = None
        self._digest = hashlib.sha256()
        self._hashed = 0                  # bytes of the partial stream in `_digest`

    def resume(self, written: bytes) -> list:
        """Continue the stream whose first bytes are `written`; return its units so far."""
        self.handle.truncate(len(written))
        self.handle.seek(len(written))
        self.writer, units = StreamWriter.resume(self.handle, written)
        self._digest.update(written)
        self._hashed = len(written)
        return units

    def save(self, values: dict, arrays: dict) -> None:
        """The encoder's `on_checkpoint`: the stream first, durably, then the checkpoint pointing into it."""
        size = self.writer.size
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self._digest.update(os.pread(self.handle.fileno(), size - self._hashed, self._hashed))
        self._hashed = size
        Checkpoint(values, arrays, self.fingerprint, size, self._digest.hexdigest(), self.rank,
                   self.interval).save(self.path)


class _FlushingSink:
    """A binary sink flushed after every write: each unit reaches the receiver once final."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink

    def write(self, data: bytes) -> int:
        written = self._sink.write(data)
        self._sink.flush()
        return written

    def flush(self) -> None:
        self._sink.flush()


def encode_stream(source: str, sink: BinaryIO, *, stats: TextIO | None = None,
                  on_start: Callable[[int | None, Fraction], None] | None = None,
                  on_iteration: Callable[[int, int, float], None] | None = None,
                  on_keyframe: Callable[[KeyframeReport], None] | None = None, **options) -> EncodeResult:
    """Encode a video into `sink` (a pipe, a socket) live: each unit is written and flushed
    as soon as it is final, so a receiver decodes while frames are still being fitted.

    The units are those `encode` writes to a file for the same input (the header's
    frame_count is 0 when the input's length is unknown, as from a pipe). There is no work folder and no
    checkpoint: an interrupted live encode leaves the receiver a stream without its end,
    whose complete intervals decode (SPEC.md, streaming decoders) and which cannot be
    resumed. `options`: see `EncodeOptions`; with an input of unknown length (a pipe), -b:v
    is spent frame by frame as frames come.
    """
    from ..io.video_input import open_video

    opts = EncodeOptions(**options)
    with open_video(source, start=opts.start, duration=opts.duration, max_frames=opts.max_frames, size=opts.size,
                    fit=opts.fit, rate=opts.rate) as reader:
        setup, frame_count = _setup_for(reader, opts)
        if on_start is not None:
            on_start(frame_count, reader.info.rate)
        frames = _decided(setup, reader.frames(), stats)
        encoder = setup.open(_FlushingSink(sink), stats=stats, on_iteration=on_iteration, on_keyframe=on_keyframe)
        summary = _push_frames(encoder, frames, 0, source)
    return EncodeResult.of(summary, _rate(setup.header), setup.rank, setup.interval)


def _setup_for(reader, opts: EncodeOptions) -> tuple[EncoderSetup, int | None]:
    """The setup for the frames `reader` gives, and their count when known."""
    info = reader.info
    frame_count = info.frame_count
    return EncoderSetup(opts, width=info.width, height=info.height, rate=info.rate,
                        frame_count=frame_count), frame_count


def _decided(setup: EncoderSetup, frames: Iterator, stats: TextIO | None) -> Iterator:
    """`frames` again, after the rate-distortion trials (`EncoderSetup.decide`) have seen the
    first `lookahead` of them: only that window is held in memory, so a pipe or a live
    source works as a file does (its first frames wait for the decision). Each trial is a
    `--stats` record."""
    if not setup.trials_decide:
        return frames
    window = list(itertools.islice(frames, setup.options.lookahead))
    setup.decide(window)
    if stats is not None and setup.decision is not None:
        for number, trial in enumerate(setup.decision.trials):
            candidate = trial.candidate
            stats.write(json.dumps({
                "trial": number, "rank": candidate.rank, "interval": candidate.interval, "refresh": candidate.refresh,
                "adaptive": candidate.adaptive, "estimated_bytes": trial.estimated_bytes, "latent_step": trial.latent_step,
                "psnr": stats_psnr([trial.psnr])[0], "keyframes": list(trial.keyframes),
                "chosen": trial is setup.decision.chosen}) + "\n")
    return itertools.chain(window, frames)


def _push_frames(encoder: Encoder, frames, skip: int, source: str) -> EncodeSummary:
    """Push the `frames` after the first `skip` and finish the stream."""
    for index, frame in enumerate(frames):
        if index >= skip:
            encoder.push(frame)
    if encoder.summary.scenes == 0:
        raise ValueError(f"{source}: no frames to encode")
    return encoder.finish()


def _encode_whole(source: str, target: Path, work: WorkDirectory, opts: EncodeOptions,
                  resumed: tuple[Checkpoint, bytes] | None, *, stats, on_start, on_iteration,
                  on_keyframe) -> EncodeResult:
    """The encode of `encode` without segments, in `work` (held); `resumed`: a checked
    checkpoint and the partial stream's bytes it was taken with."""
    from ..io.video_input import open_video

    stream_path = work.path / _STREAM
    with open_video(source, start=opts.start, duration=opts.duration, max_frames=opts.max_frames, size=opts.size,
                    fit=opts.fit, rate=opts.rate) as reader:
        setup, frame_count = _setup_for(reader, opts)
        if on_start is not None:
            on_start(frame_count, reader.info.rate)
        frames = _decided(setup, reader.frames(), stats)
        handle = io.open(stream_path, "r+b" if resumed is not None else "w+b")  # noqa: SIM115 - closed below
        with handle:
            partial = _CheckpointedStream(handle, work.path / _CHECKPOINT, fingerprint(source, opts), setup.rank,
                                          setup.interval)
            callbacks = dict(stats=stats, on_iteration=on_iteration, on_keyframe=on_keyframe,
                             on_checkpoint=partial.save)
            skip = 0
            if resumed is None:
                encoder = setup.open(handle, **callbacks)
                partial.writer = encoder.writer
            else:
                checkpoint, written = resumed
                units = partial.resume(written)
                encoder = setup.encoder(partial.writer, **callbacks)
                encoder.restore(checkpoint.state, checkpoint.arrays, units)
                skip = checkpoint.state["next_frame"]
            summary = _push_frames(encoder, frames, skip, source)
        # Renamed while the checkpoint still exists: a kill before the clean-up leaves
        # a complete output that `--resume` recognises (`_finished_result`).
        publish(stream_path, target)
        work.remove()
    return EncodeResult.of(summary, _rate(setup.header), setup.rank, setup.interval)


def fingerprint(source: str, opts: EncodeOptions) -> str:
    """What must not change between an interrupted encode and its resumption."""
    try:
        stat = os.stat(source)
        identity = [os.path.abspath(source), stat.st_size, stat.st_mtime_ns]
    except OSError:
        identity = [source]
    text = json.dumps([identity, {k: str(v) for k, v in asdict(opts).items()}], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
