"""How fast the command line answers: `mmsearch-r1 --help` and `import mmsearch_r1`, against bare Python.

    python bench/cli_startup.py [--repeat 10]

Prints the median wall time of each and whether torch got imported (it must not).
"""

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    bare = median_seconds([sys.executable, "-c", "pass"], args.repeat)
    imp = median_seconds([sys.executable, "-c", "import mmsearch_r1"], args.repeat)
    help_ = median_seconds([sys.executable, "-m", "mmsearch_r1", "--help"], args.repeat)
    torch = subprocess.run(
        [sys.executable, "-c", "import sys, mmsearch_r1.cli; print('torch' in sys.modules)"], capture_output=True, text=True
    ).stdout.strip()
    print(f"python -c pass        {bare * 1000:7.0f} ms")
    print(f"import mmsearch_r1    {imp * 1000:7.0f} ms")
    print(f"mmsearch-r1 --help    {help_ * 1000:7.0f} ms  (target < 1000 ms; {help_ / bare:.1f}x bare python)")
    print(f"torch imported by the CLI: {torch}")


if __name__ == "__main__":
    main()
