#!/bin/bash
# Issue 14's adaptive attacker on one randomised defence: BPDA-PGD-50 at 4/255 with EOT over 20 samples, the
# defence's own differentiable approximation backward (for random resize-and-pad, the transform itself), and
# the convergence check (10, 20, 50 steps; 1, 5, 20 samples), on the first 200 shared images, EfficientNet-Lite0.
# One run folder per defence, so that each finishes on its own; one thread.
#   benchmarks/tables/adaptive_randomised.sh random-resize-pad [--resume] [--ray --workers 2 --threads-per-worker 1]
set -euo pipefail
DEFENCE=${1:?usage: adaptive_randomised.sh DEFENCE [options]}; shift
exec "${CIID:-ciid}" evaluate --preset adaptive --defences "none,$DEFENCE" --attacks pgd \
  --attack-param pgd.max_iter=50 --bpda-approx differentiable --no-sanity \
  --data ../shared/data/imagenet-sample --limit 200 --out "runs/adaptive14-eot-$DEFENCE" --threads 1 "$@"
