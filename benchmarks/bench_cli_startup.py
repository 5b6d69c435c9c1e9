"""How fast the command line answers when it has no work to do: help, version and a bad option.

The target is under 1 s for each: the heavy libraries (torch, scikit-image,
ART, matplotlib) are imported only by the commands that use them.

    python benchmarks/bench_cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

CASES = {
    "ciid --help": ["--help"],
    "ciid --version": ["--version"],
    "ciid evaluate --help": ["evaluate", "--help"],
    "ciid classify --model nope x.jpg (bad option)": ["classify", "--model", "nope", "x.jpg"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    executable = shutil.which("ciid") or str(__import__("pathlib").Path(sys.executable).with_name("ciid"))
    print(f"{'command':48s} {'median s':>9s} {'max s':>7s}")
    for name, arguments in CASES.items():
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run([executable, *arguments], capture_output=True, check=False)
            times.append(time.perf_counter() - started)
        print(f"{name:48s} {statistics.median(times):9.3f} {max(times):7.3f}")


if __name__ == "__main__":
    main()
