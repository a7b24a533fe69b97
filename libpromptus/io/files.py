"""Crash-safe outputs: private temporaries, exclusive work folders, durable atomic renames.

Every output libpromptus writes follows one rule: the output name only ever holds a
complete file, whatever process is killed at whatever moment.

- `TemporaryOutput` is a file (or folder) beside the output, named
  `.NAME.PID.XXXXXXXX.part`, that this process holds under an exclusive `flock` while it
  writes; `publish` makes it the output in one rename. A `.part` left by a killed process
  is removed by the next `TemporaryOutput` for the same output, which says so: it is
  stale when the process its name carries is gone and nobody holds its lock.
- `WorkDirectory` is `.NAME.resume/` beside an output, one encode's private folder
  (checkpoints, the partial stream), held under an exclusive `flock` on its `lock` file
  for as long as the encode runs; a second encode of the same output fails at once with
  `OutputBusyError`, naming the first one's process. A dead process's lock is released
  by the kernel, so the next encode takes the folder over.
- `write_atomically` replaces a small file whole (write aside, fsync, rename, fsync the
  folder): a reader sees the old bytes or the new ones, never a mixture.

Temporary files are created private (mode 0600); the published output gets the mode a
newly created file would have under the user's umask, like any file FFmpeg writes.
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputBusyError

log = logging.getLogger("libpromptus")

#: Attempts to take a work folder's lock while another process is removing that folder.
_LOCK_ATTEMPTS = 5
#: Reads of a held lock file that is still empty (its holder writes its pid just after locking), 10 ms apart.
_HOLDER_READS = 100


@contextmanager
def naming_the_output(target: str | os.PathLike) -> Iterator[None]:
    """Make an `OSError` raised inside name `target`, the output the user asked for,
    rather than the temporary or work file that failed (`.out.y4m.123.x.part`)."""
    try:
        yield
    except OutputBusyError:
        raise
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(target)) from None


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the renames and removals in `folder` durable (POSIX leaves that to an fsync of the folder)."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def process_umask() -> int:
    """The process's file mode creation mask, read without changing it.

    Linux reports it in /proc/self/status; setting it to read it (`os.umask`) would
    change it for a moment for every thread of the process. Elsewhere the mask read
    when this module was imported is used.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return _IMPORT_UMASK


def _read_umask_once() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_IMPORT_UMASK = _read_umask_once()


def publish(temporary: str | os.PathLike, target: str | os.PathLike) -> None:
    """Give `temporary` the umask's default file mode and rename it to `target` atomically.

    The data is flushed to the disk before the rename and the rename after it, so that
    after a crash the target holds the old file or the whole new one, never a torn one.
    """
    os.chmod(temporary, 0o666 & ~process_umask())
    if not os.path.isdir(temporary):
        handle = os.open(temporary, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)
    os.replace(temporary, target)
    fsync_directory(Path(target).parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` whole: written to `path.tmp`, flushed, renamed, the folder flushed.

    The `.tmp` name is fixed, so only one process may write `path` at a time (the caller
    holds a `WorkDirectory`).
    """
    temporary = path.with_name(path.name + ".tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view):]
        os.fsync(handle)
    finally:
        os.close(handle)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def _try_lock(handle: int) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                      # alive, under another user
    except OverflowError:
        return True                      # no pid at all: not a name this module made, so keep it
    return True


class TemporaryOutput:
    """A private file or folder beside `target` that becomes `target` on `publish()`.

    Creating one first removes the stale temporaries that killed processes left for the
    same output (logged as a warning). Use as a context manager: leaving it by an
    exception discards the temporary.
    """

    def __init__(self, target: str | os.PathLike, *, directory: bool = False) -> None:
        self.target = Path(target)
        folder = self.target.parent
        remove_stale_temporaries(self.target)
        prefix = f".{_temporary_stem(self.target)}.{os.getpid()}."
        with naming_the_output(self.target):
            if directory:
                self.path = Path(tempfile.mkdtemp(dir=folder, prefix=prefix, suffix=".part"))
                self._lock = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            else:
                self._lock, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=".part")
                self.path = Path(name)
        fcntl.flock(self._lock, fcntl.LOCK_EX)   # new and private: nobody else holds it

    def publish(self) -> None:
        """Make the temporary the output (for a folder: move its files into the output's folder)."""
        if self.path.is_dir():
            for produced in sorted(self.path.iterdir()):
                os.replace(produced, self.target.parent / produced.name)
            self.path.rmdir()
            fsync_directory(self.target.parent)
        else:
            publish(self.path, self.target)
        self._release()

    def discard(self) -> None:
        """Remove the temporary and everything written to it."""
        if self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self.path.unlink(missing_ok=True)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "TemporaryOutput":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._lock is not None:
            self.discard() if kind is not None else self.publish()


def _temporary_stem(target: Path) -> str:
    """The output's name as its temporaries carry it: without `%`, which FFmpeg's image
    sequence muxer would read as a frame-number pattern in the folder's name."""
    return target.name.replace("%", "_")


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the `.part` temporaries of `target` whose process is gone; return what was removed."""
    pattern = re.compile(rf"\.{re.escape(_temporary_stem(target))}\.(\d+)\.[A-Za-z0-9_]{{8}}\.part")
    removed = []
    try:
        entries = list(os.scandir(target.parent or "."))
    except OSError:
        return removed                    # the folder's own error comes when the output is created
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or _process_exists(int(match[1])):
            continue
        try:
            handle = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue                      # removed meanwhile, or a link: not ours
        try:
            if not _try_lock(handle):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        finally:
            os.close(handle)
        log.warning("removed %s, left by process %s, which is no longer running", entry.path, match[1])
        removed.append(Path(entry.path))
    return removed


def _holder(handle: int) -> str:
    """The pid in a lock file another process holds. A new holder writes it just after it
    takes the lock, so a file read empty is read again for a moment before it counts as
    "unknown" (two encodes started together would otherwise name no one)."""
    for _ in range(_HOLDER_READS):
        text = os.pread(handle, 32, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "unknown"


class WorkDirectory:
    """`.NAME.resume/` beside an output: one encode's private folder, under an exclusive lock.

    `open()` creates the folder if needed and takes the lock (raising `OutputBusyError`
    if a live process holds it); `close()` releases it, keeping the folder only if it
    holds something (an interrupted encode's checkpoint); `remove()` deletes it whole.
    """

    LOCK = "lock"

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        self.path = self.target.parent / f".{self.target.name}.resume"
        self._lock: int | None = None

    def open(self) -> "WorkDirectory":
        for _ in range(_LOCK_ATTEMPTS):
            with naming_the_output(self.target):
                self.path.mkdir(exist_ok=True)
            lock_path = self.path / self.LOCK
            try:
                handle = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except FileNotFoundError:
                continue                  # the folder was just removed by the encode that held it
            if not _try_lock(handle):
                holder = _holder(handle)
                os.close(handle)
                raise OutputBusyError(self.target, holder)
            try:
                current = os.stat(lock_path, follow_symlinks=False)
            except FileNotFoundError:
                current = None
            if current is None or current.st_ino != os.fstat(handle).st_ino:
                os.close(handle)          # locked a lock file that its holder has since removed
                continue
            pid = f"{os.getpid()}\n".encode()
            os.pwrite(handle, pid, 0)                # then cut what a longer pid left: never read empty
            os.ftruncate(handle, len(pid))
            self._lock = handle
            return self
        raise OutputBusyError(self.target, "unknown (its work folder keeps changing)")

    def files(self) -> list[Path]:
        """What the folder holds besides its lock file."""
        return sorted(p for p in self.path.iterdir() if p.name != self.LOCK)

    def clear(self) -> None:
        """Remove everything but the lock: a fresh start in a folder this process holds."""
        for path in self.files():
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()

    def remove(self) -> None:
        """Delete the folder and release the lock."""
        self.clear()
        self.close()

    def close(self) -> None:
        """Release the lock, keeping the folder if it holds anything besides the lock.

        The lock file is removed before the lock is released, so it guards the folder to
        the end; an encode that takes the folder over meanwhile keeps it.
        """
        if self._lock is None:
            return
        if self.path.is_dir() and not self.files():
            (self.path / self.LOCK).unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:
                pass                      # another encode already took the folder over: it is theirs now
        os.close(self._lock)
        self._lock = None

    def __enter__(self) -> "WorkDirectory":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
