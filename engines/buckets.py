"""Static batch sizes: the shapes the compiled and TensorRT engines are built for.

Compiled graphs (CUDA graphs, TensorRT plans) are specialised to one shape, so a batch
is padded up to the next bucket and the padding discarded: a handful of shapes per
resolution are built once and reused, instead of one per odd batch size. The decoder's
default batch (10, the official interval) is a bucket of its own.
"""
from __future__ import annotations

import torch

BUCKETS = (1, 2, 4, 8, 10, 16, 32, 64)


def bucket(batch: int) -> int:
    """The smallest bucket that holds `batch` frames (batches above 64 are their own size)."""
    if batch < 1:
        raise ValueError(f"batch {batch}: must be at least 1")
    return next((size for size in BUCKETS if size >= batch), batch)


def pad_batch(tensor: torch.Tensor, size: int) -> torch.Tensor:
    """`tensor` [B, ...] padded to [size, ...] by repeating its last item (values stay in range)."""
    missing = size - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])
