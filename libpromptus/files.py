"""Publishing finished outputs: a temporary file becomes the output in one rename.

Temporary files are created private (mode 0600); the published output gets the mode a
newly created file would have under the user's umask, like any file FFmpeg writes.
"""
from __future__ import annotations

import os


def publish(temporary: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give `temporary` the umask's default file mode and rename it to `target` atomically."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    os.replace(temporary, target)
