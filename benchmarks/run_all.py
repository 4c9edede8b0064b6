"""Run every benchmark in this folder (files named bench_*.py), one after another, each in its own process.

Each benchmark runs overparam and its peers side by side and prints ratios; nothing here asserts a time.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    benches = sorted(HERE.glob("bench_*.py"))
    if len(sys.argv) > 1:
        benches = [b for b in benches if any(k in b.name for k in sys.argv[1:])]
    failed = []
    for bench in benches:
        print(f"\n=== {bench.name} ===", flush=True)
        if subprocess.run([sys.executable, str(bench)]).returncode != 0:
            failed.append(bench.name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
