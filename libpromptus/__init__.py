"""libpromptus: a codec library for Promptus video (video as Stable Diffusion prompts).

`libpromptus.open` / `libpromptus.decode` are the PyAV-like entry points; the container
itself lives in `libpromptus.bitstream` (no torch needed).
"""
__version__ = "0.1.0"


def open(path, **options):  # noqa: A001 - PyAV's name for the same thing
    """Open a .pmt file (`conceal=True`: conceal damaged units); see `libpromptus.api.Container`."""
    from .api import open as _open

    return _open(path, **options)


def decode(path, output, **options):
    """Decode a .pmt file into a video file; see `libpromptus.api.decode`."""
    from .api import decode as _decode

    return _decode(path, output, **options)
