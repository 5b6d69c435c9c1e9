#!/bin/bash
# Issue 41's certification tables, EfficientNet-Lite0, alpha = 0.001, N0 = 100.
#   benchmarks/tables/certify.sh grid [--resume]   sigma 0.12, 0.25, 0.5 x front none, wavelet, learned; first
#                                                  100 shared images, N = 1,000
#   benchmarks/tables/certify.sh all [--resume]    the learned front at sigma 0.25 and 0.5 on all 500 images,
#                                                  N = 1,000, and the SmoothAdv check on the first 100
#   benchmarks/tables/certify.sh gpu [--resume]    the same on a GPU at N = 10,000 (--device cuda)
# Add --dry-run to any of them for the estimated time on this machine.
# Pack a run, finished or not, with: python benchmarks/tables/archive.py pack runs/certify41-...
set -euo pipefail
data=${DATA:-../shared/data/imagenet-sample}
table=${1:?grid, all or gpu}
shift
case "$table" in
  grid) exec "${CIID:-ciid}" certify --data "$data" --limit 100 --sigma 0.12,0.25,0.5 \
          --denoiser none,wavelet,learned --n 1000 --threads 1 --out runs/certify41-grid "$@" ;;
  all)  exec "${CIID:-ciid}" certify --data "$data" --sigma 0.25,0.5 --denoiser learned --n 1000 --threads 1 \
          --check-attack 100 --out runs/certify41-all "$@" ;;
  gpu)  exec "${CIID:-ciid}" certify --data "$data" --sigma 0.25,0.5 --denoiser learned,none --n 10000 \
          --batch-size 1000 --device cuda --check-attack 100 --out runs/certify41-gpu "$@" ;;
  *) echo "unknown table $table: grid, all or gpu" >&2; exit 2 ;;
esac
