"""Fault injection: pmtenc and pmtdec killed at every system call of their checkpoint and
publish paths, racing each other, on a full disk and on a read-only folder.

The invariant, everywhere: after the fault, and after `pmtenc --resume` (or a plain
rerun), the output is the uninterrupted run's bytes or absent, never anything else, and
no debris is left. The kills are real: `strace -e inject=SYSCALL:signal=SIGKILL:when=N`
stops the process at the entry of the N-th such call (the call itself does not happen).
An injection point is found by tracing an undisturbed run first, so the suite follows
the code as it changes; the table of points and outcomes is printed, and written to
$PMT_FAULT_TABLE (Markdown) when that is set. Needs strace (`.ci/run` installs it);
the full-disk and read-only cases need root, to mount their own small tmpfs.

A sweep runs two injection points at a time, each in a folder of its own: a traced
process stops at every system call, so it keeps one core busy, and the machine has two.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from libpromptus.bitstream import read_streams

from libpromptus.io.samples import write_sample

pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")]

#: The system calls the suite kills at, by what they do.
TRACED = ("rename", "renameat", "renameat2", "unlink", "unlinkat", "rmdir", "fsync", "fdatasync", "write",
          "pwrite64")
ENCODE = ["--model", "tiny", "--rank", "2", "-g", "7", "--iterations", "2", "--first-iterations", "3",
          "-loglevel", "error"]
#: One thread and no bytecode writes: the traced runs repeat the record run's calls exactly.
ENVIRONMENT = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
_CALL = re.compile(r"^(\w+)\((.*)\) += (-?\d+|\?)")
TABLE: list[tuple[str, str, str, str]] = []


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", f"libpromptus.cli.{name}"]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, env=ENVIRONMENT, timeout=300, **kwargs)


def _strace(log: Path, inject: tuple[str, int] | None = None) -> list[str]:
    """strace recording every `TRACED` call (with the paths of descriptors), or killing at one."""
    # -ff: one log per thread, so the main thread's calls are never split across lines
    for stale in log.parent.glob(log.name + ".*"):
        stale.unlink()
    command = ["strace", "-ff", "-qq", "-y", "-o", str(log)]
    if inject is None:          # stopped only at the traced calls: a fifth of the time of stopping at all of them
        return command + ["--seccomp-bpf", "-e", "trace=" + ",".join(TRACED)]
    # (no --seccomp-bpf: with it, strace 6.1 does not deliver injected signals)
    return command + ["-e", f"trace={inject[0]}", "-e", f"inject={inject[0]}:signal=SIGKILL:when={inject[1]}"]


def _two_at_a_time(check, cases: list) -> list:
    """`check(number, case)` for every case, two at a time, the results in the cases' order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(check, range(len(cases)), cases))


def _calls(log: Path) -> list[tuple[str, str, str]]:
    """(system call, its arguments, its result) for each call the main thread made, in order."""
    main = min(log.parent.glob(log.name + ".*"), key=lambda p: int(p.suffix[1:]))
    return [(m[1], m[2], m[3]) for m in map(_CALL.match, main.read_text().splitlines()) if m]


def _points(log: Path, folder: Path) -> list[tuple[str, int, str]]:
    """The recorded calls that touch `folder`, as injection points: (system call, its ordinal
    among the main thread's calls of that kind, which `when=` counts, the path it touched)."""
    seen: dict[str, int] = {}
    points = []
    for name, arguments, _ in _calls(log):
        seen[name] = seen.get(name, 0) + 1
        touched = [p for p in re.findall(r'"([^"]*)"|<([^>]*)>', arguments) for p in p if p.startswith(str(folder))]
        if touched:
            points.append((name, seen[name], touched[0]))
    return points


def _killed_at(log: Path, name: str, folder: Path) -> bool:
    """Whether the traced run died at a `name` call that touched `folder`."""
    last = _calls(log)[-1]
    return last[0] == name and last[2] == "?" and str(folder) in last[1]


def _short(path: str, root: Path) -> str:
    return path.replace(str(root) + "/", "").replace(str(root), ".")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    # three frames: with -g 7, keyframes 0 and 1, then a scene cut at 2, so the sweep kills a first
    # checkpoint, one taken while another is in place, and one taken at a scene cut
    path = tmp_path_factory.mktemp("faults-clip") / "clip.y4m"
    write_sample(str(path), 3, 48, 48)
    return path


@pytest.fixture(scope="module")
def references(clip, tmp_path_factory) -> dict[int, bytes]:
    """The uninterrupted encode's bytes, per seed."""
    folder = tmp_path_factory.mktemp("faults-reference")
    result = {}
    for seed in (1, 2):
        out = folder / f"seed{seed}.pmt"
        assert _run(_tool("pmtenc") + ["-i", str(clip), *ENCODE, "--seed", str(seed), str(out)]).returncode == 0
        result[seed] = out.read_bytes()
    assert result[1] != result[2]
    return result


def test_pmtenc_killed_at_every_checkpoint_and_publish_call(clip, references, tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "out.pmt"
    log = tmp_path / "trace.txt"
    assert _run(_strace(log) + _tool("pmtenc") + ["-i", str(clip), *ENCODE, "--seed", "1", str(out)]).returncode == 0
    assert out.read_bytes() == references[1]
    points = _points(log, folder)
    kinds = {name for name, _, _ in points}
    assert {"rename", "unlink", "rmdir", "fsync", "write", "pwrite64"} <= kinds, kinds
    assert len(points) >= 26        # a lock, three checkpoints of six calls, the last unit, publish and clean-up

    def kill_and_resume(number: int, point: tuple[str, int, str]) -> tuple[str, str, str, str]:
        name, ordinal, touched = point
        folder = tmp_path / f"point{number}"
        folder.mkdir()
        out = folder / "out.pmt"
        encode = _tool("pmtenc") + ["-i", str(clip), *ENCODE, "--seed", "1", str(out)]
        log = tmp_path / f"trace{number}.txt"
        killed = _run(_strace(log, (name, ordinal)) + encode)
        assert killed.returncode in (-9, 137) and _killed_at(log, name, folder), (name, ordinal, killed)
        after_kill = "absent" if not out.exists() else "complete" if out.read_bytes() == references[1] else "WRONG"
        resumed = _run(_tool("pmtenc") + ["-i", str(clip), *ENCODE, "--seed", "1", "--resume", "-y", str(out)])
        if resumed.returncode == 0:
            outcome = "resumed" if after_kill == "absent" else "recognised as complete"
        else:
            message = resumed.stderr.decode().strip()
            assert message.count("\n") == 0 and message.startswith("pmtenc: error: "), message
            outcome = f"refused: {_short(message.split(': ', 3)[-1], folder)}"
            if not out.exists():     # the plain rerun the refusal asks for
                assert _run(encode[:-1] + ["-y", str(out)]).returncode == 0
                outcome += "; plain rerun"
        final = out.read_bytes() == references[1]
        clean = sorted(os.listdir(folder)) == ["out.pmt"]
        held = after_kill != "WRONG" and final and clean
        return ("pmtenc", f"{name} #{ordinal} ({_short(touched, tmp_path / 'out')})", f"{after_kill}; {outcome}",
                "held" if held else f"BROKEN (final {'ok' if final else 'wrong'}, files {os.listdir(folder)})")

    rows = _two_at_a_time(kill_and_resume, points)
    TABLE.extend(rows)
    assert [row for row in rows if row[-1] != "held"] == []


def test_the_torn_checkpoint_kill_resumes_to_the_uninterrupted_bytes(clip, references, tmp_path):
    """The torn-checkpoint case of the old two-file design: killed at the rename of the
    second checkpoint, while the first one is in place."""
    out = tmp_path / "out.pmt"
    encode = _tool("pmtenc") + ["-i", str(clip), *ENCODE, "--seed", "1", str(out)]
    log = tmp_path / "trace.txt"
    assert _run(_strace(log) + encode).returncode == 0
    ordinal = [n for name, n, path in _points(log, tmp_path) if name == "rename"][1]
    out.unlink()
    killed = _run(_strace(log, ("rename", ordinal)) + encode)
    assert killed.returncode in (-9, 137) and _killed_at(log, "rename", tmp_path)
    assert _calls(log)[-1][1].startswith(f'"{tmp_path}/.out.pmt.resume/checkpoint.npz.tmp"')
    assert not out.exists()
    assert _run(encode[:-1] + ["--resume", str(out)]).returncode == 0
    assert out.read_bytes() == references[1]


@pytest.fixture(scope="module")
def decoded(references, tmp_path_factory) -> tuple[Path, bytes]:
    """A stream and its undisturbed decode."""
    folder = tmp_path_factory.mktemp("faults-decoded")
    stream = folder / "in.pmt"
    stream.write_bytes(references[1])
    out = folder / "out.y4m"
    assert _run(_tool("pmtdec") + ["-i", str(stream), "-loglevel", "error", str(out)]).returncode == 0
    return stream, out.read_bytes()


def test_pmtdec_killed_at_every_publish_call_and_mid_write(decoded, tmp_path):
    stream, reference = decoded
    folder = tmp_path / "out"
    folder.mkdir()
    log = tmp_path / "trace.txt"
    command = _tool("pmtdec") + ["-i", str(stream), "-loglevel", "error", "-y", str(folder / "out.y4m")]
    assert _run(_strace(log) + command).returncode == 0
    points = _points(log, folder)
    assert {name for name, _, _ in points} >= {"rename", "fsync", "write"}, points

    def kill_and_rerun(number: int, point: tuple[str, int, str]) -> tuple[str, str, str, str]:
        name, ordinal, touched = point
        folder = tmp_path / f"point{number}"
        folder.mkdir()
        out = folder / "out.y4m"
        command = _tool("pmtdec") + ["-i", str(stream), "-loglevel", "error", "-y", str(out)]
        if ordinal:
            log = tmp_path / f"trace{number}.txt"
            killed = _run(_strace(log, (name, ordinal)) + command)
            assert killed.returncode in (-9, 137) and _killed_at(log, name, folder), (name, ordinal, killed)
        else:
            process = subprocess.Popen(command[:-1] + ["-progress", "pipe:1", str(out)], stdout=subprocess.PIPE,
                                       env=ENVIRONMENT)
            for line in process.stdout:          # killed once the first frames are out
                if line.startswith(b"frame=") and line != b"frame=0\n":
                    process.kill()
                    break
            process.wait(timeout=60)
        after_kill = "absent" if not out.exists() else "complete" if out.read_bytes() == reference else "WRONG"
        debris = [p for p in os.listdir(folder) if p.endswith(".part")]
        rerun = _run([*command[:-1], "-loglevel", "warning", command[-1]])     # the removal is a warning
        cleaned = all(f"removed {folder / p}, left by process" in rerun.stderr.decode() for p in debris)
        held = (after_kill != "WRONG" and rerun.returncode == 0 and out.read_bytes() == reference and cleaned
                and os.listdir(folder) == ["out.y4m"])
        outcome = f"{after_kill}, {len(debris)} .part left; rerun " + ("removed it" if debris else "found none")
        return ("pmtdec", f"{name}" + (f" #{ordinal}" if ordinal else "") + f" ({_short(touched, tmp_path / 'out')})",
                outcome, "held" if held else "BROKEN")

    rows = _two_at_a_time(kill_and_rerun, points + [("SIGKILL mid-write", 0, str(folder / "out.y4m"))])
    TABLE.extend(rows)
    assert [row for row in rows if row[-1] != "held"] == []


RACE_TRIALS = int(os.environ.get("PMT_RACE_TRIALS", "10"))


def test_racing_encodes_never_leave_a_file_reported_written_that_is_not(clip, references, tmp_path):
    out = tmp_path / "mix.pmt"
    outcomes = []
    for trial in range(RACE_TRIALS):
        out.unlink(missing_ok=True)
        racers = {seed: subprocess.Popen(_tool("pmtenc") + ["-i", str(clip), *ENCODE[:-2], "--seed", str(seed), "-y",
                                                             str(out)], stderr=subprocess.PIPE, env=ENVIRONMENT)
                  for seed in (1, 2)}
        results = {seed: (p.wait(timeout=300), p.stderr.read().decode()) for seed, p in racers.items()}
        winners = [seed for seed, (code, text) in results.items() if code == 0 and "wrote " in text]
        assert winners, results
        read_streams(str(out))                                   # what pmtprobe reads: the whole file, strictly
        assert out.read_bytes() in [references[seed] for seed in winners]
        for seed, (code, text) in results.items():
            if code != 0:
                other = racers[3 - seed].pid
                assert text.strip().splitlines()[-1] == f"pmtenc: error: {out}: being written by process {other}"
        outcomes.append(len(winners))
        assert sorted(os.listdir(tmp_path)) == ["mix.pmt"]
    TABLE.append(("pmtenc ×2", f"race, seeds 1 and 2, {RACE_TRIALS} trials",
                  f"{outcomes.count(1)} refused the second at once, {outcomes.count(2)} ran one after the other",
                  "held"))


@pytest.fixture(params=[("full disk (16 KiB tmpfs)", "size=16k,mode=0755", "No space left on device"),
                        ("read-only folder", "ro,size=64k", "Read-only file system")], ids=["full", "read-only"])
def hostile_folder(request, tmp_path):
    """A tmpfs of the test's own, mounted full-sized or read-only: (folder, label, the error it gives)."""
    label, options, error = request.param
    path = tmp_path / "mounted"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.decode().strip()}); needs root")
    yield path, label, error
    subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("tool", ["pmtenc", "pmtdec"])
def test_a_full_or_read_only_folder_gives_one_line_naming_the_file_and_leaves_nothing(tool, clip, decoded,
                                                                                      hostile_folder):
    folder, label, error = hostile_folder
    out = folder / ("out.pmt" if tool == "pmtenc" else "out.y4m")
    source = ["-i", str(clip), *ENCODE] if tool == "pmtenc" else ["-i", str(decoded[0]), "-loglevel", "error"]
    result = _run(_tool(tool) + source + [str(out)])
    message = result.stderr.decode().strip()
    assert result.returncode == 1 and "\n" not in message, message
    assert re.fullmatch(rf"{tool}: error: {re.escape(str(folder))}/\S+: {error}", message), message
    assert os.listdir(folder) == []
    TABLE.append((tool, label, message.split(": ", 2)[-1].replace(str(folder) + "/", ""), "held"))


def teardown_module() -> None:
    if not TABLE:
        return
    lines = ["| tool | injection point | after the fault; what the next run did | invariant |",
             "|---|---|---|---|"] + [f"| {' | '.join(row)} |" for row in TABLE]
    text = "\n".join(lines) + "\n"
    sys.stdout.write("\n" + text)
    if os.environ.get("PMT_FAULT_TABLE"):
        Path(os.environ["PMT_FAULT_TABLE"]).write_text(text)
