"""Inference engines (filled by the decoder issue)."""
