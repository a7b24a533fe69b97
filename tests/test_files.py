"""Private temporaries, their clean-up after killed processes, exclusive work folders."""
import logging
import os
import stat
import subprocess
import sys

import pytest

from libpromptus.io.files import (
    OutputBusyError,
    TemporaryOutput,
    WorkDirectory,
    remove_stale_temporaries,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True)
    return int(child.stdout)


def test_a_temporary_carries_the_pid_is_private_and_publishes_with_the_umask_mode(tmp_path):
    target = tmp_path / "out.mkv"
    with TemporaryOutput(target) as temporary:
        assert temporary.path.parent == tmp_path
        assert temporary.path.name.startswith(f".out.mkv.{os.getpid()}.") and temporary.path.suffix == ".part"
        assert stat.S_IMODE(temporary.path.stat().st_mode) == 0o600
        temporary.path.write_bytes(b"frames")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"frames" and stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["out.mkv"]


def test_a_failure_discards_the_temporary(tmp_path):
    with pytest.raises(RuntimeError), TemporaryOutput(tmp_path / "out.mkv") as temporary:
        temporary.path.write_bytes(b"half")
        raise RuntimeError
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed_and_reported(tmp_path, caplog):
    dead = _dead_pid()
    stale_file = tmp_path / f".out.mkv.{dead}.abcd_123.part"
    stale_file.write_bytes(b"x" * 1000)
    stale_folder = tmp_path / f".out.mkv.{dead}.zz9_zz9z.part"
    stale_folder.mkdir()
    (stale_folder / "00001.png").write_bytes(b"png")
    kept = [tmp_path / f".out.mkv.{os.getpid()}.abcdefgh.part",    # a live process's (ours)
            tmp_path / f".other.mkv.{dead}.abcdefgh.part",          # another output's
            tmp_path / f".out.mkv.{dead}.short.part",               # not a name we make
            tmp_path / f".out.mkv.{10 ** 30}.abcdefgh.part",        # nor this: no pid
            tmp_path / "out.mkv"]
    for path in kept:
        path.write_bytes(b"keep")
    with caplog.at_level(logging.WARNING, logger="libpromptus"):
        with TemporaryOutput(tmp_path / "out.mkv") as temporary:
            temporary.path.write_bytes(b"new")
    assert not stale_file.exists() and not stale_folder.exists()
    assert all(path.exists() for path in kept)
    assert sorted(caplog.messages) == sorted(f"removed {path}, left by process {dead}, which is no longer running"
                                            for path in (stale_file, stale_folder))


def test_a_temporary_whose_lock_is_held_is_never_removed(tmp_path):
    import fcntl

    stale = tmp_path / f".out.mkv.{_dead_pid()}.abcdefgh.part"
    stale.write_bytes(b"x")
    with open(stale, "rb") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)        # as a writer in another pid namespace would hold it
        assert remove_stale_temporaries(tmp_path / "out.mkv") == []
    assert remove_stale_temporaries(tmp_path / "out.mkv") == [stale] and not stale.exists()


def test_an_image_sequence_temporary_has_no_percent_in_its_name(tmp_path):
    with TemporaryOutput(tmp_path / "%05d.png", directory=True) as temporary:
        assert "%" not in temporary.path.name and temporary.path.is_dir()
        (temporary.path / "00001.png").write_bytes(b"one")
        (temporary.path / "00002.png").write_bytes(b"two")
    assert sorted(os.listdir(tmp_path)) == ["00001.png", "00002.png"]


def test_a_work_directory_is_exclusive_and_names_its_holder(tmp_path):
    target = tmp_path / "out.pmt"
    script = ("import sys, time; from libpromptus.io.files import WorkDirectory; "
              "w = WorkDirectory(sys.argv[1]).open(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(OutputBusyError) as err:
            WorkDirectory(target).open()
        assert err.value.filename == str(target) and err.value.strerror == f"being written by process {holder.pid}"
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with WorkDirectory(target) as work:                  # the dead holder's lock is free again
        assert (work.path / "lock").read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == []                   # nothing but the lock: the folder goes


def test_a_holder_caught_before_it_wrote_its_pid_is_still_named(tmp_path):
    """Two encodes started together: the second may find the lock taken and the lock file
    still empty; it waits for the holder's pid rather than naming "unknown"."""
    import fcntl
    import threading

    target = tmp_path / "out.pmt"
    folder = tmp_path / ".out.pmt.resume"
    folder.mkdir()
    handle = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(handle, fcntl.LOCK_EX)                  # held, nothing written yet
    writer = threading.Timer(0.2, os.pwrite, (handle, b"4242\n", 0))
    writer.start()
    try:
        with pytest.raises(OutputBusyError) as err:
            WorkDirectory(target).open()
        assert err.value.strerror == "being written by process 4242"
    finally:
        writer.join()
        os.close(handle)


def test_a_work_directory_keeps_what_it_holds_until_removed(tmp_path):
    work = WorkDirectory(tmp_path / "out.pmt").open()
    (work.path / "checkpoint.npz").write_bytes(b"state")
    work.close()
    assert sorted(os.listdir(work.path)) == ["checkpoint.npz", "lock"]
    with WorkDirectory(tmp_path / "out.pmt") as again:
        assert again.files() == [again.path / "checkpoint.npz"]
        again.remove()
    assert os.listdir(tmp_path) == []
