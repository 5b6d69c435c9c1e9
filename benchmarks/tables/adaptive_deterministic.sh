#!/bin/bash
# Issue 14's adaptive attacker on the deterministic defences (no EOT needed): BPDA with PGD, APGD-CE and
# APGD-DLR at 50 steps, every approximation, and the convergence check (10, 20, 50 steps), on the first 200
# shared images, EfficientNet-Lite0. One thread.
#   benchmarks/tables/adaptive_deterministic.sh [--resume]
set -euo pipefail
exec "${CIID:-ciid}" evaluate --preset adaptive --defences none,ciid,ciid-denoise-only,jpeg,bit-depth,median \
  --data ../shared/data/imagenet-sample --limit 200 --out runs/adaptive14-deterministic --threads 1 "$@"
