"""Peak memory and time of purifying one large photograph (default 4000 x 3000) with ``ciid purify``.

The photograph is a shared sample image enlarged with Lanczos resampling and
saved as JPEG. ``ciid purify`` runs in a child process, so the peak resident
memory printed is the whole command's: Python, torch, the model and the
image (issue target: under 2 GiB).

    python benchmarks/bench_large_image.py [--width 4000 --height 3000] [--inpainter telea]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import add_data_option, sample_images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--inpainter", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        original = sample_images(1, args.data)[0][0]
        small = run_purify(original, Path(folder) / "small", args.inpainter)
        source = Path(folder) / "input" / "large.jpg"  # --out may not lie inside the input's folder
        source.parent.mkdir()
        with Image.open(original) as image:
            image.convert("RGB").resize((args.width, args.height), Image.Resampling.LANCZOS).save(source, quality=92)
        large = run_purify(source, Path(folder) / "large", args.inpainter)
        with Image.open(Path(folder) / "large" / "large.png") as result:
            size = result.size
    print(f"baseline, the same command on {original.name}: {small[1]:.0f} MiB peak, {small[0]:.1f} s")
    print(f"purified {args.width} x {args.height} -> {size[0]} x {size[1]} in {large[0]:.1f} s "
          f"(whole command, model load included)")
    print(f"peak resident memory of the command: {large[1]:.0f} MiB ({large[1] / 1024:.2f} GiB; target < 2 GiB)")


def run_purify(path: Path, out: Path, inpainter: str | None) -> tuple[float, float]:
    """Seconds and peak resident MiB of ``ciid purify PATH --out OUT`` in a fresh child process."""
    command = [sys.executable, "-m", "ciidefence.cli.main", "purify", str(path), "--out", str(out)]
    if inpainter:
        command += ["--inpainter", inpainter]
    script = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script, *command], check=True, capture_output=True, text=True)
    return time.perf_counter() - started, int(result.stdout.split()[-1]) / 1024


if __name__ == "__main__":
    main()
