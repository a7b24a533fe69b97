"""Adaptive streaming over MPEG-DASH (SPEC.md Annex D): the MPD of a rendition set, and
the client that fetches a path through it, choosing a rendition per segment.

This package sits beside `io/`: it imports `bitstream/` and `io/` only, so the encoder
(`encoder.dash`, which writes renditions) and the decoder's callers (pmtdec, `open`)
both build on it.
"""
