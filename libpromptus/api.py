"""The PyAV-like Python API: `open` a .pmt file, `demux` its units, `decode` its frames.

    import libpromptus as pmt
    with pmt.open("clip.pmt") as container:
        print(container.info.width, container.info.frame_count)
        for frame in container.decode(model="tiny"):
            frame.image                      # numpy uint8 [height, width, 3]
    pmt.decode("clip.pmt", "clip.mkv", model="tiny")
    with pmt.open("damaged.pmt", conceal=True) as container:   # conceal lost units instead of failing
        container.concealment.frames         # the concealed frames' display indices
"""
from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .bitstream import ReadUnit, SequenceHeader, Stream, read_streams, read_units
from .bitstream.concealment import ConcealmentReport, read_concealed
from .bitstream.limits import MAX_KEYFRAME_INTERVAL, MAX_RANK
from .decoder.decoding import Frame, decode_frames
from .encoder.checkpoint import Checkpoint, CheckpointError
from .engines import DEFAULT_BATCH
from .io.files import WorkDirectory, publish

log = logging.getLogger("libpromptus")

#: An encode's files in its work folder (`files.WorkDirectory`): the partial stream and its checkpoint.
_STREAM, _CHECKPOINT = "stream.partial", "checkpoint.npz"


class ModelMismatchError(ValueError):
    """The stream was made for another generator than the one loaded."""


@dataclass(frozen=True)
class StreamInfo:
    """What a player needs to know before decoding."""

    width: int
    height: int
    rate: Fraction
    frame_count: int
    model_name: str
    model_hash: bytes
    header: SequenceHeader


class Container:
    """An opened .pmt file (all its concatenated streams).

    With `conceal=True` damaged units do not stop it: `streams` are rebuilt from what
    survived and `concealment` reports the concealed frames (`libpromptus.bitstream.concealment`);
    otherwise `concealment` is None. `demux` always reads the file strictly.
    """

    def __init__(self, path: str | os.PathLike, *, conceal: bool = False) -> None:
        self.path = path
        self.streams: list[Stream]
        self.concealment: ConcealmentReport | None = None
        if conceal:
            self.streams, self.concealment = read_concealed(path)
        else:
            self.streams = read_streams(path)
        header = self.streams[0].header
        self.info = StreamInfo(header.width, header.height, Fraction(header.fps_num, header.fps_den),
                               sum(s.frame_count for s in self.streams), header.model_name, header.model_hash,
                               header)

    def demux(self) -> Iterator[ReadUnit]:
        """Yield every unit of the file, in order."""
        yield from read_units(self.path)

    def decode(self, *, model: str | None = None, engine: str = "auto", device: str = "auto",
               precision: str = "auto", batch: int = DEFAULT_BATCH, start_frame: int = 0, frame_count: int | None = None,
               force_model: bool = False, tensors: bool = False) -> Iterator[Frame]:
        """Return an iterator over the decoded frames (SPEC.md §8), in display order.

        `model` is a registered name or a path (default: $PROMPTUS_MODEL, else the model
        the stream names);
        `force_model` decodes with it even when the stream names another model. The
        model is loaded and checked before this returns, so its errors come first.
        With `tensors=True` each `Frame.image` is a torch uint8 tensor instead of a numpy array.
        """
        from .engines import create_engine
        from .models import load_generator

        generator = load_generator(decoder_model(model, self.info.header))
        check_model(self.info.header, generator, force=force_model)
        runner = create_engine(engine, generator, self.info.header, device=device, precision=precision)
        frames = decode_frames(self.streams, runner, batch=batch, start_frame=start_frame, frame_count=frame_count)
        if tensors:
            import torch

            return (Frame(f.index, torch.from_numpy(f.image)) for f in frames)
        return frames

    def __enter__(self) -> "Container":
        return self

    def __exit__(self, *exc) -> None:
        return None


def open(path: str | os.PathLike, *,
         conceal: bool = False) -> Container:  # noqa: A001 - the PyAV-style name is the point
    """Open a .pmt file: reads and checks all its units (no model needed); `conceal`: see `Container`."""
    return Container(path, conceal=conceal)


def decoder_model(model: str | None, header: SequenceHeader) -> str:
    """The model to decode with: the one asked for, else $PROMPTUS_MODEL, else the stream's."""
    return model or os.environ.get("PROMPTUS_MODEL") or header.model_name


def check_model(header: SequenceHeader, generator, *, force: bool = False) -> None:
    """Refuse a generator the stream was not made for (SPEC.md §7), unless forced.

    Geometry (latent channels and downsampling, conditioning shape, block size) must
    fit even when forced: the network could not run otherwise.
    """
    profile = generator.profile
    fits = (header.latent_channels == profile.latent_channels
            and header.latent_downsampling == profile.latent_downsampling
            and (header.cond_tokens, header.cond_dim) == (profile.cond_tokens, profile.cond_dim)
            and header.size_multiple % profile.size_multiple == 0)
    if not fits:
        raise ModelMismatchError(f"model {generator.name} cannot decode this stream: its latent or conditioning "
                                 f"shape differs from the stream's")
    if header.model_name != generator.name:
        if not force:
            raise ModelMismatchError(f"the stream is for model {header.model_name}, not {generator.name} "
                                     f"(--force-model decodes it anyway)")
        log.warning("decoding a %s stream with model %s (forced)", header.model_name, generator.name)
        return
    if not any(header.model_hash):
        log.warning("the stream does not pin the %s weights (model hash unset)", header.model_name)
    elif header.model_hash != generator.identity():
        if not force:
            raise ModelMismatchError(f"the stream was made with other {header.model_name} weights (hash "
                                     f"{header.model_hash.hex()[:16]}…, loaded {generator.identity().hex()[:16]}…); "
                                     f"--force-model decodes it anyway")
        log.warning("decoding with %s weights whose hash differs from the stream's (forced)", generator.name)


def decode(path: str | os.PathLike, output: str, *, codec: str | None = None, crf: int | None = None,
           overwrite: bool = False, conceal: bool = False, **options) -> int:
    """Decode a whole .pmt file into a video file (or image sequence); return the frame count.

    `conceal=True` conceals damaged units and logs each concealment as a warning.
    """
    from .io.video_output import VideoWriter, output_format

    container = open(path, conceal=conceal)
    for record in container.concealment.concealed if conceal else ():
        log.warning("%s", record.describe())
    info = container.info
    frames = container.decode(**options)
    writer = VideoWriter(output, info.width, info.height, info.rate,
                         output_format(output, codec=codec, crf=crf), overwrite=overwrite)
    try:
        for frame in frames:
            writer.write(frame.image)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.frames


@dataclass(frozen=True)
class EncodeOptions:
    """Everything `encode` accepts besides the input and output names."""

    model: str | None = None               # default: $PROMPTUS_MODEL, else sd-turbo
    bitrate: float | None = None           # bits per second (-b:v); chooses rank and interval
    rank: int | None = None                # --rank (overrides the rate control's choice)
    interval: int | None = None            # -g
    first_iterations: int | None = None    # default: the model's (official 10,000 for sd-turbo)
    iterations: int | None = None          # default: the model's (official 1,500 for sd-turbo)
    scene_threshold: float | None = 0.3    # None: no scene detection
    latent_codec: str = "q8"
    coding: str = "entropy"
    perceptual: str = "auto"
    alpha: float = 0.8
    warm_start: bool = False
    temporal_beta: float | None = None     # the paper's temporal smoothing (beta 0.2 there); None: off
    patience: int | None = None            # early stopping: iterations without improvement; None: off
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    size: tuple[int, int] | None = None    # -s
    fit: str = "crop"
    rate: Fraction | None = None           # -r
    start: float | None = None             # -ss
    duration: float | None = None          # -t
    max_frames: int | None = None          # -frames:v
    skip_frames: int = 0                   # frames dropped after -ss (a segment's start)


@dataclass(frozen=True)
class EncodeResult:
    """What an encode produced; `summary` has the per-keyframe reports."""

    frames: int
    bytes: int
    bitrate_bps: float
    rank: int
    interval: int
    summary: object

    @classmethod
    def of(cls, summary, rate: Fraction, rank: int, interval: int) -> "EncodeResult":
        """The result of an encode whose `summary` (an `EncodeSummary`) is final, at frame `rate`."""
        duration = summary.frames / rate
        return cls(summary.frames, summary.bytes, float(summary.bytes * 8 / duration), rank, interval, summary)


def encode(source: str, output: str, *, overwrite: bool = False, resume: bool = False, stats=None,
           on_start=None, on_iteration=None, on_keyframe=None, **options) -> EncodeResult:
    """Encode a video (any input PyAV reads) into a .pmt file; see `EncodeOptions`.

    The encode holds `.OUTPUT.resume/` beside the output under an exclusive lock (a
    second encode of the same output raises `OutputBusyError` at once), writes the
    stream there with a checkpoint after every keyframe, and renames it to `output` when
    complete: a failure never leaves a partial file under the output name. After an
    interruption (Ctrl-C, a killed process) `resume=True` continues from the last
    finished keyframe and gives the same bytes as an uninterrupted run, or refuses in
    one line when the checkpoint does not match; any other failure removes the folder.
    Callbacks: `on_start(frame_count or None, rate)`, `on_iteration(keyframe, iteration,
    loss)`, `on_keyframe(KeyframeReport)`.
    """
    segment_seconds = options.pop("segment_seconds", None)
    jobs = options.pop("jobs", 1)
    opts = EncodeOptions(**options)
    target = Path(output)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{output}: already exists (use -y to overwrite)")
    if segment_seconds is not None and resume:
        raise ValueError("--resume works per encode; a segmented encode restarts its unfinished segments")
    try:
        with WorkDirectory(target) as work:   # first, so that a second encode of `output` fails at once
            if segment_seconds is not None:
                _discard_interrupted(work)
                try:
                    return _encode_segments(source, target, work.path, opts, segment_seconds, jobs, stats)
                finally:
                    work.remove()
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
                return _encode_whole(source, target, work, opts, resumed, stats, on_start, on_iteration, on_keyframe)
            except KeyboardInterrupt:
                if not (work.path / _CHECKPOINT).exists():
                    work.remove()
                raise
            except BaseException:
                work.remove()
                raise
    except OSError as err:
        if err.filename is None and err.errno is not None:   # a failed write (a full disk): name the output
            raise OSError(err.errno, err.strerror, output) from None
        raise


def _checkpoint_to_resume(work: WorkDirectory, source: str, opts: EncodeOptions) -> Checkpoint:
    """The interrupted encode's checkpoint, checked against this encode's input and options."""
    path = work.path / _CHECKPOINT
    if not path.exists():
        raise ValueError(f"{work.target}: nothing to resume (no checkpoint in {work.path})")
    checkpoint = Checkpoint.load(path)
    if checkpoint.fingerprint != _fingerprint(source, opts):
        raise ValueError(f"{work.target}: the input or options differ from the interrupted encode; "
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
    from .encoder.encoder import EncodeSummary, KeyframeReport

    try:
        data = target.read_bytes()
        checkpoint.check_stream(data, str(target))
        stream = read_streams(io.BytesIO(data))[0]
    except (OSError, ValueError):
        raise CheckpointError(f"{target}: the checkpoint in {work.path} has lost its partial stream; "
                              "start again without --resume") from None
    log.info("%s: the interrupted encode had already finished; nothing to resume", target)
    work.remove()
    header = stream.header
    keyframes = [KeyframeReport(**k) for k in checkpoint.state["keyframes"]]
    summary = EncodeSummary(stream.frame_count, checkpoint.state["scenes"], keyframes, len(data))
    return EncodeResult.of(summary, Fraction(header.fps_num, header.fps_den), checkpoint.rank, checkpoint.interval)


def _encode_whole(source: str, target: Path, work: WorkDirectory, opts: EncodeOptions,
                  resumed: tuple[Checkpoint, bytes] | None, stats, on_start, on_iteration, on_keyframe) -> EncodeResult:
    """The encode of `encode` without segments, in `work` (held); `resumed`: a checked
    checkpoint and the partial stream's bytes it was taken with."""
    import hashlib

    from . import __version__
    from .bitstream import Coding, LatentCodec, Metadata, StreamWriter
    from .encoder.encoder import DEFAULT_ITERATIONS, Encoder, EncoderSettings
    from .encoder.losses import make_perceptual_loss
    from .encoder.ratecontrol import choose
    from .engines import create_engine
    from .io.video_input import open_video
    from .models import load_generator, load_latent_encoder

    stream_path, checkpoint_path = work.path / _STREAM, work.path / _CHECKPOINT
    fingerprint = _fingerprint(source, opts)
    with open_video(source, start=opts.start, duration=opts.duration, max_frames=opts.max_frames, size=opts.size,
                    fit=opts.fit, rate=opts.rate) as reader:
        info = reader.info
        generator = load_generator(opts.model)
        latent_encoder = load_latent_encoder(opts.model)
        frame_count = None if info.frame_count is None else max(info.frame_count - opts.skip_frames, 0)
        profile = generator.profile
        header = profile.sequence_header(width=info.width, height=info.height, fps_num=info.rate.numerator,
                                         fps_den=info.rate.denominator, frame_count=frame_count or 0,
                                         model_hash=generator.identity())
        rank, interval = _rank_and_interval(opts, header, info.rate, frame_count, choose)
        max_rank = min(header.cond_tokens, header.cond_dim, MAX_RANK)
        if not 1 <= rank <= max_rank:
            raise ValueError(f"--rank {rank}: model {generator.name} allows ranks 1..{max_rank}")
        if not 1 <= interval <= MAX_KEYFRAME_INTERVAL:
            raise ValueError(f"-g {interval}: keyframe intervals are 1..{MAX_KEYFRAME_INTERVAL}")
        if on_start is not None:
            on_start(frame_count, info.rate)
        precision = opts.precision
        device_engine = create_engine("torch", generator, header, device=opts.device, precision=precision)
        if precision == "auto" and device_engine.device.type == "cuda":
            device_engine = create_engine("torch", generator, header, device=opts.device, precision="bf16")
        latent_encoder.module.to(device_engine.device)
        first_default, later_default = DEFAULT_ITERATIONS.get(generator.name, DEFAULT_ITERATIONS["sd-turbo"])
        settings = EncoderSettings(
            rank=rank, interval=interval,
            first_iterations=first_default if opts.first_iterations is None else opts.first_iterations,
            iterations=later_default if opts.iterations is None else opts.iterations,
            alpha=opts.alpha, scene_threshold=opts.scene_threshold,
            latent_codec=LatentCodec[opts.latent_codec.upper()], coding=Coding[opts.coding.upper()],
            warm_start=opts.warm_start, temporal_beta=opts.temporal_beta, patience=opts.patience, seed=opts.seed,
            bitrate=opts.bitrate if opts.interval is None else None)
        perceptual = make_perceptual_loss(opts.perceptual, device_engine.device)
        digest = hashlib.sha256()
        hashed = 0                       # bytes of the partial stream in `digest`

        def save_checkpoint(values: dict, arrays: dict) -> None:
            # The stream first, durably, then the checkpoint that points into it, in one rename.
            nonlocal hashed
            handle.flush()
            os.fsync(handle.fileno())
            digest.update(os.pread(handle.fileno(), writer.size - hashed, hashed))
            hashed = writer.size
            Checkpoint(values, arrays, fingerprint, writer.size, digest.hexdigest(), rank, interval).save(
                checkpoint_path)

        handle = io.open(stream_path, "r+b" if resumed is not None else "w+b")  # noqa: SIM115 - closed below
        with handle:
            if resumed is None:
                writer = StreamWriter(handle, header)
                writer.write(Metadata((("encoder", f"libpromptus {__version__}"),
                                       ("settings", f"model={generator.name} rank={rank} interval={interval} "
                                                    f"iterations={settings.first_iterations}/"
                                                    f"{settings.iterations} latent_codec={opts.latent_codec} "
                                                    f"perceptual={perceptual.kind} seed={opts.seed}"))))
                units = None
            else:
                checkpoint, written = resumed
                handle.truncate(len(written))
                handle.seek(len(written))
                writer, units = StreamWriter.resume(handle, written)
                digest.update(written)
                hashed = len(written)
            encoder = Encoder(writer, device_engine, latent_encoder, perceptual, settings, stats=stats,
                              on_iteration=on_iteration, on_keyframe=on_keyframe, on_checkpoint=save_checkpoint)
            encoder.expected_frames = frame_count
            skip = opts.skip_frames
            if resumed is not None:
                encoder.restore(checkpoint.state, checkpoint.arrays, units)
                skip += checkpoint.state["next_frame"]
            for index, frame in enumerate(reader.frames()):
                if index >= skip:
                    encoder.push(frame)
            if encoder.summary.scenes == 0:
                raise ValueError(f"{source}: no frames to encode")
            summary = encoder.finish()
        # Renamed while the checkpoint still exists: a kill before the clean-up leaves
        # a complete output that `--resume` recognises (`_finished_result`).
        publish(stream_path, target)
        work.remove()
    return EncodeResult.of(summary, Fraction(header.fps_num, header.fps_den), rank, interval)


def _fingerprint(source: str, opts: EncodeOptions) -> str:
    """What must not change between an interrupted encode and its resumption."""
    import hashlib
    import json
    from dataclasses import asdict

    try:
        stat = os.stat(source)
        identity = [os.path.abspath(source), stat.st_size, stat.st_mtime_ns]
    except OSError:
        identity = [source]
    text = json.dumps([identity, {k: str(v) for k, v in asdict(opts).items()}], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _rank_and_interval(opts: EncodeOptions, header: SequenceHeader, rate: Fraction, frame_count: int | None,
                       choose) -> tuple[int, int]:
    """--rank/-g as given; otherwise the rate control's choice for -b:v; else the official 8 and 10."""
    if opts.bitrate is None:
        return opts.rank or 8, opts.interval or 10
    frames = frame_count or round(10 * rate)
    channels, height, width = header.latent_shape
    # Everything but the keyframes: prefix, header, metadata, one 8-bit entropy-coded latent
    # (about 7 bits per value) or a stored float one, end of stream.
    latent = channels * height * width * {"q8": 7 / 8, "f16": 2, "f32": 4}[opts.latent_codec] + 64
    fixed = round(10 + 100 + 200 + latent + 18 + 8)
    floor_bps = fixed * 8 * float(rate) / frames
    if floor_bps > opts.bitrate:
        from .encoder.ratecontrol import describe_bitrate

        log.warning("-b:v %s is below what %d frames cost before any keyframe (the first-frame latent and "
                    "headers alone: %.1f kbit/s), so the file will exceed it; a longer clip or a smaller -s "
                    "lowers that floor", describe_bitrate(opts.bitrate), frames, floor_bps / 1000)
    choice = choose(opts.bitrate, frames=frames, rate=float(rate), fixed_bytes=fixed,
                    cond_tokens=header.cond_tokens, cond_dim=header.cond_dim)
    return opts.rank or choice.rank, opts.interval or choice.interval


def _encode_segment(source: str, output: str, options: dict, threads: int | None, log_level: int = logging.WARNING):
    """One segment of a segmented encode (run in a worker process)."""
    logging.getLogger().setLevel(log_level)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    result = encode(source, output, overwrite=True, **options)
    return result.summary


def _encode_segments(source: str, target: Path, work: Path, opts: EncodeOptions, segment_seconds: float, jobs: int,
                     stats) -> EncodeResult:
    """Encode closed segments of `segment_seconds` independently (up to `jobs` at once) in the
    folder `work` and merge them into one stream: each segment starts a scene with its own
    first-frame latent."""
    import concurrent.futures
    import json
    import multiprocessing
    from dataclasses import asdict

    from . import __version__
    from .bitstream import Metadata, merge_streams
    from .encoder.encoder import EncodeSummary
    from .io.video_input import open_video

    if segment_seconds <= 0 or jobs < 1:
        raise ValueError("--segment-seconds must be positive and --jobs at least 1")
    with open_video(source, start=opts.start, duration=opts.duration, max_frames=opts.max_frames, size=opts.size,
                    fit=opts.fit, rate=opts.rate) as reader:
        rate = reader.info.rate
        total = reader.info.frame_count
        if total is None:
            total = sum(1 for _ in reader.frames())
    length = max(1, round(segment_seconds * rate))
    starts = list(range(0, total, length))
    if not starts:
        raise ValueError(f"{source}: no frames to encode")
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    base = {k: v for k, v in asdict(opts).items() if k not in ("max_frames", "skip_frames")}
    tasks = []
    for number, first in enumerate(starts):
        count = min(length, total - first)
        limit = first + count if opts.max_frames is None else min(first + count, opts.max_frames)
        tasks.append((source, str(work / f"{number:05d}.pmt"),
                      {**base, "max_frames": limit, "skip_frames": first}, threads,
                      logging.getLogger().getEffectiveLevel()))
    if jobs == 1:
        summaries = [_encode_segment(*task) for task in tasks]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            summaries = list(pool.map(_encode_segment, *zip(*tasks)))
    segments = [read_streams(task[1])[0] for task in tasks]
    temporary = work / "merged.pmt"
    with io.open(temporary, "wb") as sink:
        settings = dict(segments[0].metadata).get("settings", "")
        size = merge_streams(segments, sink, metadata=Metadata((
            ("encoder", f"libpromptus {__version__}"),
            ("settings", f"{settings} segment_seconds={segment_seconds}".strip()))))
    if stats is not None:
        for first, summary in zip(starts, summaries):
            for report in summary.keyframes:
                record = {"keyframe": report.frame_index + first,
                          "frames": [report.first_frame + first, report.frame_index + first],
                          "scene": report.scene, "iterations": report.iterations, "loss": report.loss,
                          "bytes": report.bytes, "psnr": [round(p, 4) for p in report.psnr], "segment_start": first}
                stats.write(json.dumps(record) + "\n")
    publish(temporary, target)
    keyframes = [k for s in summaries for k in s.keyframes]
    merged = EncodeSummary(total, sum(len(s.scenes) for s in segments), keyframes, size)
    return EncodeResult.of(merged, rate, segments[0].scenes[0].keyframes[0].unit.rank, length)
