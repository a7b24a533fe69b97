"""Caps on every size and count a stream can declare (SPEC.md, "Limits").

The reader checks each declared value against its cap before it allocates anything, so
a hostile stream costs at most `MAX_UNIT_SIZE` bytes of memory per unit.
"""
from __future__ import annotations

MAX_UNIT_SIZE = 1 << 25            # payload bytes of one unit (32 MiB)
MAX_LEB128_BYTES = 4               # a unit size needs at most 4 leb128 bytes
MAX_DIMENSION = 4096               # output width and height, pixels
MAX_SIZE_MULTIPLE = 1024           # block size that coded sizes are rounded up to
MAX_LATENT_CHANNELS = 16
LATENT_DOWNSAMPLING = (1, 2, 4, 8, 16, 32, 64)
MAX_COND_TOKENS = 512
MAX_COND_DIM = 4096
MAX_RANK = 255
MAX_KEYFRAME_INTERVAL = 256        # frames from one keyframe to the next
MAX_FRAME_INDEX = (1 << 31) - 1    # frame indices and frame counts
MAX_FPS_TERM = (1 << 31) - 1       # numerator and denominator of the frame rate
MAX_TIMESTEP = 65535
MAX_MODEL_NAME = 64                # bytes
MAX_METADATA_ENTRIES = 256
MAX_METADATA_KEY = 64              # bytes
MAX_METADATA_VALUE = 4096          # bytes
MAX_INDEX_ENTRIES = 1 << 21
