"""libpromptus: a codec library for Promptus video (video as Stable Diffusion prompts).

The container lives in `libpromptus.bitstream` (no torch needed); the model-free part
of the decoding process (prompt composition) in `libpromptus.prompts`.
"""
__version__ = "0.1.0"
