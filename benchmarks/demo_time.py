"""Wall time of the main job, `synthmed demo`, against its 10-minute target on a 2-core CPU.

Runs the demo into a fresh directory, then runs it again on the finished directory (every
job done: the rerun only collects results and rebuilds the report) and prints both with the
time each job took. Run it alone on the machine: other load distorts CPU timings.

    python benchmarks/demo_time.py [--out /tmp/demo-bench] [--target-min 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run_demo(out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "synthmed.cli", "demo", "--out", str(out)], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/synthmed-demo-bench"))
    parser.add_argument("--target-min", type=float, default=10.0)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    first = run_demo(args.out)
    rerun = run_demo(args.out)
    print("\njob seconds:")
    for done in sorted(args.out.glob("jobs/*/done.json")):
        print(f"  {json.loads(done.read_text())['seconds']:7.1f}  {done.parent.name}")
    print(f"demo from scratch: {first / 60:.1f} min (target {args.target_min:g} min: "
          f"{'met' if first <= args.target_min * 60 else 'NOT met'}); rerun on the finished directory: {rerun:.0f} s")


if __name__ == "__main__":
    main()
