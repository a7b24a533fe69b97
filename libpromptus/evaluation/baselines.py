"""The baselines: H.265 (x265), H.264 (x264), AV1 (SVT-AV1) and VP9 (libvpx) through PyAV.

Each encodes the clip's RGB frames converted to 4:2:0 YUV (BT.601, limited range,
swscale's accurate rounding, the conversion FFmpeg does for `-pix_fmt yuv420p`) at the
clip's size and rate, and writes a raw elementary stream (Annex B `.hevc`/`.h264`, AV1
low-overhead `.obu`, VP9 in `.ivf`): the file holds the codec's bytes and next to no
container, and every byte of it is counted. Decoding goes back to RGB through the same
matrix, so the chroma subsampling is part of what the metrics see, as for any viewer.

Rate control, the best each encoder offers through PyAV:

- x265 and x264: two-pass ABR (`pass=1`, then `pass=2` on the first pass's stats file,
  through `x265-params`/`x264-params`), preset medium, no tune.
- SVT-AV1: one-pass VBR (`rc=1` with the target as `tbr`, which FFmpeg's wrapper sets
  from the bit rate), preset 6, one thread (`lp=1`, so that its bytes repeat). FFmpeg's
  libsvtav1 wrapper has no two-pass.
- VP9: one-pass VBR (`b:v`), `deadline=good`, `cpu-used=2`, `row-mt=1`, alt-ref frames
  with the default 25-frame lag. libvpx's two-pass needs the codec context's
  `stats_out`/`stats_in` buffers, which PyAV does not expose.

On clips of a second or two none of these lands near the target by itself, so
`ratematch.match_rate` searches the encoder's rate target until the whole file is within
±3 % of the target (see there).
"""
from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from .clip import Clip
from .codecs import Codec, Encoded, Progress
from .ratematch import MAX_ATTEMPTS, TOLERANCE, OutOfReach, match_rate

__all__ = ["AV1", "VP9", "X264", "X265", "PyAVCodec"]

PIX_FMT = "yuv420p"


def _interpolation():
    """swscale flags for exact, deterministic colour conversion (as `video_input` uses)."""
    from av.video.reformatter import Interpolation

    return Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT | Interpolation.BITEXACT


class PyAVCodec(Codec):
    """A codec FFmpeg encodes: `encoder` writes `muxer`'s format in `passes` passes."""

    encoder: str
    muxer: str
    passes: tuple[int, ...] = (0,)     # (0,): one pass; (1, 2): two passes sharing a stats file

    def encoder_options(self, pass_number: int, stats: str | None) -> dict[str, str]:
        """The encoder's AVOptions for one pass (`stats`: the stats file of a two-pass encode)."""
        return {}

    @property
    def settings(self) -> dict:
        import av

        return {"encoder": self.encoder, "format": self.muxer, "pix_fmt": PIX_FMT, "passes": list(self.passes),
                "options": {p: self.encoder_options(p, "STATS") for p in self.passes},
                "rate_tolerance": TOLERANCE, "rate_attempts": MAX_ATTEMPTS, "pyav": av.__version__,
                "libavcodec": ".".join(map(str, av.library_versions["libavcodec"]))}

    def check(self, clip: Clip) -> None:
        if clip.width % 2 or clip.height % 2:
            raise ValueError(f"{self.name}: 4:2:0 needs an even width and height, not {clip.width}x{clip.height} "
                             "(choose a size with -s)")

    def encode(self, clip: Clip, bitrate: float, path: Path, progress: Progress) -> Encoded:
        import av

        seconds = float(clip.duration)
        with tempfile.TemporaryDirectory(prefix="pmteval-") as work:
            stats = os.path.join(work, "stats")

            def attempt(encoder_bitrate: float) -> tuple[float, tuple[bytes, int]]:
                try:
                    data, payload = self._encode_passes(clip, encoder_bitrate, stats)
                except av.InvalidDataError as error:
                    # what x265's second pass raises for a target below what the clip can be coded in
                    raise OutOfReach(f"{self.name} refused the rate target {encoder_bitrate / 1000:.1f} kbit/s "
                                     f"({error.strerror})") from error
                progress(f"encoder target {encoder_bitrate / 1000:.1f} kbit/s -> {len(data) * 8 / seconds / 1000:.1f}")
                return len(data) * 8 / seconds, (data, payload)

            best, attempts = match_rate(attempt, bitrate)
        data, payload = best.result
        path.write_bytes(data)
        return Encoded(len(data), payload, {
            "encoder_bitrate_bps": round(best.encoder_bitrate),
            "rate_attempts": [{"encoder_bitrate_bps": round(a.encoder_bitrate), "bitrate_bps": a.bitrate}
                              for a in attempts]})

    def _encode_passes(self, clip: Clip, bitrate: float, stats: str) -> tuple[bytes, int]:
        for pass_number in self.passes:
            data, payload = self._encode_pass(clip, bitrate, self.encoder_options(pass_number, stats))
        return data, payload

    def _encode_pass(self, clip: Clip, bitrate: float, options: dict[str, str]) -> tuple[bytes, int]:
        """(file bytes, payload bytes) of one pass. A function of its own: the encoder is
        freed when it returns, which is when x265 and x264 finish writing their stats file."""
        import av

        buffer = io.BytesIO()
        payload = 0
        flags = _interpolation()
        with av.open(buffer, "w", format=self.muxer) as container:
            stream = container.add_stream(self.encoder, rate=Fraction(clip.rate))
            stream.width, stream.height = clip.width, clip.height
            stream.pix_fmt = PIX_FMT
            stream.bit_rate = max(1, round(bitrate))
            stream.options = options
            for index, image in enumerate(clip.frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=PIX_FMT,
                                                                                    interpolation=flags)
                frame.pts = index
                for packet in stream.encode(frame):
                    payload += packet.size
                    container.mux(packet)
            for packet in stream.encode(None):
                payload += packet.size
                container.mux(packet)
        return buffer.getvalue(), payload

    def decode(self, path: Path, progress: Progress) -> list[np.ndarray]:
        import av

        flags = _interpolation()
        with av.open(str(path), "r", format=self.muxer) as container:
            return [frame.reformat(format="rgb24", interpolation=flags).to_ndarray()
                    for frame in container.decode(video=0)]


class X265(PyAVCodec):
    """H.265/HEVC, libx265, two-pass ABR, preset medium."""

    name, encoder, muxer, extension, passes = "x265", "libx265", "hevc", ".hevc", (1, 2)

    def encoder_options(self, pass_number: int, stats: str | None) -> dict[str, str]:
        return {"preset": "medium", "x265-params": f"log-level=none:pass={pass_number}:stats={stats}"}


class X264(PyAVCodec):
    """H.264/AVC, libx264, two-pass ABR, preset medium."""

    name, encoder, muxer, extension, passes = "x264", "libx264", "h264", ".h264", (1, 2)

    def encoder_options(self, pass_number: int, stats: str | None) -> dict[str, str]:
        return {"preset": "medium", "x264-params": f"pass={pass_number}:stats={stats}"}


class AV1(PyAVCodec):
    """AV1, SVT-AV1, one-pass VBR, preset 6, one thread."""

    name, encoder, muxer, extension = "av1", "libsvtav1", "obu", ".obu"

    def encoder_options(self, pass_number: int, stats: str | None) -> dict[str, str]:
        # lp=1: one thread. With several, SVT-AV1's rate control depends on thread timing
        # (three encodes of one clip gave 33.8, 34.1 and 34.2 kbit/s), which the rate search
        # cannot converge on and which makes results unrepeatable.
        return {"preset": "6", "svtav1-params": "lp=1"}

    def _encode_pass(self, clip: Clip, bitrate: float, options: dict[str, str]) -> tuple[bytes, int]:
        # SVT-AV1 prints its own log lines on stderr (a thread-priority warning on every
        # encode here); SVT_LOG=1 keeps it to errors unless the user chose a level.
        os.environ.setdefault("SVT_LOG", "1")
        return super()._encode_pass(clip, bitrate, options)


class VP9(PyAVCodec):
    """VP9, libvpx, one-pass VBR, deadline good, cpu-used 2."""

    name, encoder, muxer, extension = "vp9", "libvpx-vp9", "ivf", ".ivf"

    def encoder_options(self, pass_number: int, stats: str | None) -> dict[str, str]:
        return {"deadline": "good", "cpu-used": "2", "row-mt": "1"}
