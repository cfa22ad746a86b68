"""Prepare throughput on br35h: N worker processes against one, with peak memory.

    python benchmarks/prepare_throughput.py [--workers N] [--limit K] [--resolution 32 64]

Each configuration runs ``synthmed.data.store.prepare`` in a fresh Python process, so that
its peak memory is its own: the main process's max RSS (``getrusage(RUSAGE_SELF)``) and the
largest worker's (``getrusage(RUSAGE_CHILDREN)``, the pool's processes having been reaped).
The JPEGs are read once beforehand so that every configuration finds them in the page
cache. Throughput counts the whole prepare (decode, groups, split, .npy files, manifest).
The stores go into a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def subset(source, limit: int | None):
    """``limit`` records spread evenly over the (class-sorted) list, so both classes stay in."""
    from synthmed.data.records import SourceData

    records = source.records
    if limit is not None and limit < len(records):
        records = [records[i * len(records) // limit] for i in range(limit)]
    return SourceData(source.name, source.label_names, records, source.params, source.versions)


def child(args: argparse.Namespace) -> None:
    """One measured prepare; prints a JSON line."""
    from synthmed.data.sources import load_source
    from synthmed.data.store import prepare

    source = subset(load_source("br35h"), args.limit)
    start = time.perf_counter()
    store = prepare(source, args.out, resolutions=args.resolution, workers=args.workers,
                    batch_size=args.batch_size, progress=False, log=lambda line: None)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "workers": args.workers,
        "images": len(store),
        "seconds": seconds,
        # Linux reports ru_maxrss in KiB
        "main_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "content_hash": store.manifest["content_hash"],
    }))


def run_one(workers: int, out: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", "--workers", str(workers), "--out", str(out),
               "--batch-size", str(args.batch_size), "--resolution", *map(str, args.resolution)]
    if args.limit is not None:
        command += ["--limit", str(args.limit)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"prepare with {workers} worker(s) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="N (default: os.cpu_count())")
    parser.add_argument("--limit", type=int, default=None, help="use this many of the 3000 images")
    parser.add_argument("--resolution", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from synthmed.data.sources import load_source

    source = subset(load_source("br35h"), args.limit)
    for record in source.records:  # warm the page cache: every run reads the files from memory
        Path(record.loader.path).read_bytes()
    configurations = sorted({1, max(1, args.workers)})
    print(f"br35h, {len(source.records)} images, resolutions {args.resolution}, "
          f"batch size {args.batch_size}, {os.cpu_count()} CPUs; each run in a fresh process")
    with tempfile.TemporaryDirectory(prefix="synthmed-bench-") as tmp:
        results = [run_one(w, Path(tmp) / f"store-{w}", args) for w in configurations]
    base = results[0]["images"] / results[0]["seconds"]
    header = f"{'workers':>7}  {'images':>6}  {'seconds':>7}  {'images/s':>8}  {'speed-up':>8}  " \
             f"{'main max RSS':>12}  {'worker max RSS':>14}"
    print(header)
    print("-" * len(header))
    for r in results:
        rate = r["images"] / r["seconds"]
        worker = f"{r['worker_rss_mib']:.0f} MiB" if r["workers"] > 1 else "-"
        print(f"{r['workers']:>7}  {r['images']:>6}  {r['seconds']:>7.2f}  {rate:>8.1f}  {rate / base:>7.2f}x  "
              f"{r['main_rss_mib']:>8.0f} MiB  {worker:>14}")
    if len({r["content_hash"] for r in results}) != 1:
        sys.exit("the stores differ between worker counts")
    print("stores identical across worker counts (same content hash)")


if __name__ == "__main__":
    main()
