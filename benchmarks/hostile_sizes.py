"""How fast, and in how little memory, streams that declare hostile sizes are refused.

For every stream of `libpromptus.conformance.fuzzing.hostile_streams()` (unit sizes, dimensions,
ranks, counts and coded symbol counts at or beyond SPEC.md §10's caps, overlong leb128):

- the reader in this process: its error code, wall and CPU time, and the peak of Python's
  own allocations while reading (tracemalloc; numpy and construct allocate through it);
- each CLI in a fresh process, as a user runs it (pmtprobe; pmtdec writing prompts or
  video; pmtenc given the stream as its input): exit status, error code, whether stderr
  is one line, whether an output file was left, wall and CPU time (medians of --repeat
  runs) and peak RSS of the whole process (os.wait4), interpreter and imports included.

The baseline of each CLI is the same command refusing a 10-byte file that is not a
stream: what the interpreter and the CLI's imports cost before any parsing. Targets:
refused in under 1 s of CPU time (wall time on a shared machine includes other jobs'),
in under 100 MB. Prints one JSON object.

    python benchmarks/hostile_sizes.py [--repeat 3] [--out benchmarks/results/hostile_sizes-cpu.json]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from libpromptus.bitstream import InvalidDataError, read_streams
from libpromptus.conformance.fuzzing import HostileStream, hostile_streams

TARGET_SECONDS = 1.0
TARGET_MB = 100.0
CLIS = {
    "pmtprobe": ["pmtprobe", "IN"],
    "pmtdec --dump-prompts": ["pmtdec", "-i", "IN", "--dump-prompts", "OUT.npz"],
    "pmtdec (video)": ["pmtdec", "-i", "IN", "OUT.mkv"],
    "pmtenc": ["pmtenc", "-i", "IN", "OUT.pmt"],
}
_CODE = re.compile(r"error: invalid data: (\w+):")

# A child's ru_maxrss starts at the RSS of the process that forked it, so the CLI is
# forked from this small launcher (a bare interpreter, about 10 MB), not from the
# benchmark (150 MB of hostile streams): it prints the CLI's exit status, wall time,
# CPU time and peak RSS in KiB.
_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{os.waitstatus_to_exitcode(status)} {time.perf_counter() - start} "
                 f"{usage.ru_utime + usage.ru_stime} {usage.ru_maxrss}")
"""


def run_cli(template: list[str], source: Path, work: Path) -> dict:
    """Run one CLI on `source` in a fresh process; its outcome, wall time and peak RSS."""
    for leftover in work.iterdir():
        leftover.unlink()
    prog, *args = template
    argv = ["-m", f"libpromptus.cli.{prog}"]
    argv += [str(source) if a == "IN" else str(work / a) if a.startswith("OUT") else a for a in args]
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report"
        err = subprocess.run([sys.executable, "-c", _LAUNCHER, str(report), *argv], cwd=work, check=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).stderr
        status, seconds, cpu_seconds, max_rss_kib = report.read_text().split()
    lines = err.decode(errors="replace").splitlines()
    match = _CODE.search(lines[0]) if lines else None
    return {
        "exit_status": int(status),
        "code": match.group(1) if match else None,
        "stderr": lines[0][:240] if lines else "",
        "one_line": len(lines) == 1,
        "output_left": sorted(p.name for p in work.iterdir()),
        "seconds": float(seconds),
        "cpu_seconds": float(cpu_seconds),
        "peak_rss_mb": int(max_rss_kib) * 1024 / 1e6,
    }


def measure_cli(template: list[str], source: Path, work: Path, repeat: int) -> dict:
    runs = [run_cli(template, source, work) for _ in range(repeat)]
    result = dict(runs[0])
    result["seconds"] = round(statistics.median(r["seconds"] for r in runs), 3)
    result["cpu_seconds"] = round(statistics.median(r["cpu_seconds"] for r in runs), 3)
    result["peak_rss_mb"] = round(max(r["peak_rss_mb"] for r in runs), 1)
    return result


def measure_reader(case: HostileStream) -> dict:
    """The reader alone, in this process: code, wall and CPU time, then tracemalloc's peak (a second read)."""
    def read() -> str | None:
        try:
            read_streams(io.BytesIO(case.data))
        except InvalidDataError as err:
            return err.code
        return None

    start, cpu = time.perf_counter(), time.process_time()
    code = read()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    tracemalloc.start()
    read()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"code": code, "seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3),
            "python_alloc_peak_mb": round(peak / 1e6, 1)}


def versions() -> dict:
    names = ("libpromptus", "numpy", "construct", "constriction", "google-crc32c", "torch")
    return {name: importlib.metadata.version(name) for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="CLI runs per case (median time, max RSS)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    cases = hostile_streams()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        junk = root / "junk.pmt"
        junk.write_bytes(b"not a .pmt")
        baseline = {name: measure_cli(t, junk, work, args.repeat) for name, t in CLIS.items()}
        results = []
        for case in cases:
            source = root / f"{case.name}.pmt"
            source.write_bytes(case.data)
            results.append({
                "name": case.name, "declares": case.declares, "bytes": len(case.data), "expected_code": case.code,
                "reader": measure_reader(case),
                "clis": {name: measure_cli(t, source, work, args.repeat) for name, t in CLIS.items()},
            })
            source.unlink()
            print(f"{case.name}: done", file=sys.stderr, flush=True)
    over = [{"case": r["name"], "cli": name, "seconds": c["seconds"], "cpu_seconds": c["cpu_seconds"],
             "peak_rss_mb": c["peak_rss_mb"]}
            for r in results for name, c in r["clis"].items()
            if c["cpu_seconds"] >= TARGET_SECONDS or c["peak_rss_mb"] >= TARGET_MB]
    report = {
        "benchmark": "hostile_sizes",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1min": {"before": round(load_before[0], 1), "after": round(os.getloadavg()[0], 1)},
        "versions": versions(),
        "repeat": args.repeat,
        "targets": {"cpu_seconds": TARGET_SECONDS, "peak_rss_mb": TARGET_MB},
        "notes": {
            "peak_rss_mb": "the whole CLI process (os.wait4 ru_maxrss), interpreter and imports included",
            "seconds": "wall time, median of `repeat` runs; cpu_seconds: user + system time of the process, "
                       "which other jobs on a shared machine do not inflate",
            "python_alloc_peak_mb": "the reader's own allocations (tracemalloc), in this process",
            "pmtenc": "reads no .pmt input (-i is a video for PyAV, or a prompt directory with -f promptus-dir; "
                      "--resume reads only its own checkpoint): it refuses a .pmt by its signature, before torch",
        },
        "baseline_not_a_stream": baseline,
        "cases": results,
        "summary": {
            "refused_with_expected_code": all(
                r["reader"]["code"] == r["expected_code"] and all(
                    c["exit_status"] == 1 and c["one_line"] and not c["output_left"]
                    and (c["code"] == r["expected_code"] or name == "pmtenc")
                    for name, c in r["clis"].items())
                for r in results),
            "max_seconds": max(c["seconds"] for r in results for c in r["clis"].values()),
            "max_cpu_seconds": max(c["cpu_seconds"] for r in results for c in r["clis"].values()),
            "max_peak_rss_mb": max(c["peak_rss_mb"] for r in results for c in r["clis"].values()),
            "over_targets": over,
        },
    }
    text = json.dumps(report, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
