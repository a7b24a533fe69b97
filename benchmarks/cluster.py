"""Cluster encoding: the wall time of one 4-segment encode on a Ray cluster of 1 and of 2 worker nodes.

    sudo python benchmarks/cluster.py [--repeats 2] [--iterations N --first-iterations N] [--out FILE.json]

The cluster is tests/cluster_helpers.py's (root, iproute2 and Ray needed): a head that
only schedules and worker nodes of one CPU each, as separate processes, in a network
namespace with only a loopback interface. The encode is the tests' (24 frames of
128×128, 4 segments, one thread per task): `pmtenc --cluster 127.0.0.1:6379 ...`.
Each repeat runs it on one worker node, then starts a second node and runs it again, so
the two figures of a repeat come from the same cluster minutes apart; every file must
have the same md5 (`--jobs 2` gives it too). `ratio` is the median 2-node time over the
median 1-node time: 0.5 would be perfect scaling; the rest is each task's start (a new
worker process, imports, the model) and the driver's. `--iterations` and
`--first-iterations` replace the encode's 15 and 30 to make the segments longer.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from environment import environment, report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cluster_helpers import ENCODE, PORT, LocalCluster, write_clip  # noqa: E402 - the tests' cluster, one copy


def timed_encode(cluster: LocalCluster, clip: Path, out: Path, encode: list[str]) -> dict:
    """One cluster encode of `clip`: its wall time, md5 and the nodes its segments ran on."""
    stats = out.with_suffix(".jsonl")
    began = time.monotonic()
    done = cluster.pmtenc("-i", str(clip), *encode, "--cluster", f"127.0.0.1:{PORT}", "--stats", str(stats), "-y",
                          str(out))
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"cluster encode failed: {done.stderr.strip().splitlines()[-1]}")
    segments = [r for r in map(json.loads, stats.read_text().splitlines()) if "attempts" in r]
    return {"seconds": round(seconds, 2), "md5": hashlib.md5(out.read_bytes()).hexdigest(),
            "nodes_used": len({r["node"] for r in segments}),
            "segment_seconds": [r["seconds"] for r in sorted(segments, key=lambda r: r["segment"])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--first-iterations", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    encode = list(ENCODE)
    for option, value in (("--iterations", args.iterations), ("--first-iterations", args.first_iterations)):
        if value is not None:
            encode[encode.index(option) + 1] = str(value)
    runs: dict[str, list[dict]] = {"1 node": [], "2 nodes": []}
    with tempfile.TemporaryDirectory() as folder:
        clip = write_clip(Path(folder, "clip.y4m"))
        for _ in range(args.repeats):
            cluster = LocalCluster(f"pmtbench{os.getpid()}")
            try:
                cluster.start(workers=1)
                runs["1 node"].append(timed_encode(cluster, clip, Path(folder, "one.pmt"), encode))
                cluster.workers.append(cluster.start_worker())
                runs["2 nodes"].append(timed_encode(cluster, clip, Path(folder, "two.pmt"), encode))
            finally:
                cluster.close()
    one = statistics.median(r["seconds"] for r in runs["1 node"])
    two = statistics.median(r["seconds"] for r in runs["2 nodes"])
    result = environment("cluster", {"encode": encode, "segments": 4, "worker_cpus": 1, "repeats": args.repeats})
    result.update(runs=runs, median_seconds={"1 node": one, "2 nodes": two}, ratio=round(two / one, 3),
                  same_md5=len({r["md5"] for rs in runs.values() for r in rs}) == 1)
    report(result, args.out)


if __name__ == "__main__":
    main()
