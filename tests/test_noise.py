"""The noise tensor against an independent implementation of SPEC.md's algorithm 1."""
import math
import struct

import numpy as np

from libpromptus.process.noise import noise_tensor
from libpromptus.process.profiles import SD_TURBO


class SpecMT19937Polar:
    """MT19937 (init_genrand) + 53-bit doubles + polar method, written from SPEC.md."""

    def __init__(self, seed: int) -> None:
        self.mt = [seed & 0xFFFFFFFF]
        for i in range(1, 624):
            self.mt.append((1812433253 * (self.mt[-1] ^ (self.mt[-1] >> 30)) + i) & 0xFFFFFFFF)
        self.index = 624
        self.cached = None

    def genrand_int32(self) -> int:
        if self.index == 624:
            for i in range(624):
                y = (self.mt[i] & 0x80000000) | (self.mt[(i + 1) % 624] & 0x7FFFFFFF)
                self.mt[i] = self.mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        return y ^ (y >> 18)

    def double(self) -> float:
        a = self.genrand_int32() >> 5
        b = self.genrand_int32() >> 6
        return (a * 67108864.0 + b) / 9007199254740992.0

    def gauss(self) -> float:
        if self.cached is not None:
            value, self.cached = self.cached, None
            return value
        while True:
            x1 = 2.0 * self.double() - 1.0
            x2 = 2.0 * self.double() - 1.0
            r2 = x1 * x1 + x2 * x2
            if 0.0 < r2 < 1.0:
                break
        f = math.sqrt(-2.0 * math.log(r2) / r2)
        self.cached = f * x1
        return f * x2


def _f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def test_noise_matches_the_spec_algorithm_and_the_official_definition():
    header = SD_TURBO.sequence_header(width=512, height=512, fps_num=30, fps_den=1, frame_count=1)
    noise = noise_tensor(header)
    assert noise.shape == (1, 4, 64, 64) and noise.dtype == np.float32
    # The official code: numpy.random.RandomState(88).randn(1, 4, H/8, W/8) cast to float32.
    assert np.array_equal(noise, np.random.RandomState(88).randn(1, 4, 64, 64).astype(np.float32))
    spec = SpecMT19937Polar(88)
    first = [_f32(spec.gauss()) for _ in range(2000)]
    assert first == noise.reshape(-1)[:2000].tolist()
