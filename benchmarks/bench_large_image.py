"""Peak memory and time of purifying one large photograph (default 4000 x 3000) with ``ciid purify``.

The photograph is a shared sample image enlarged with Lanczos resampling and
saved as JPEG. ``ciid purify`` runs in a child process, so the peak resident
memory printed is the whole command's: Python, torch, the model and the
image (issue target: under 2 GiB).

    python benchmarks/bench_large_image.py [--width 4000 --height 3000] [--inpainter telea]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import sample_images
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--inpainter", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "large.jpg"
        with Image.open(sample_images(1)[0][0]) as image:
            image.convert("RGB").resize((args.width, args.height), Image.Resampling.LANCZOS).save(source, quality=92)
        command = [sys.executable, "-m", "ciidefence.cli.main", "purify", str(source), "--out", folder]
        if args.inpainter:
            command += ["--inpainter", args.inpainter]
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        with Image.open(Path(folder) / "large.png") as result:
            size = result.size
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"purified {args.width} x {args.height} -> {size[0]} x {size[1]} in {seconds:.1f} s "
          f"(whole command, model load included)")
    print(f"peak resident memory of the command: {peak:.0f} MiB ({peak / 1024:.2f} GiB; target < 2 GiB)")


if __name__ == "__main__":
    main()
