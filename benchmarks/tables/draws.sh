#!/bin/bash
# Issue 44's K-draw table: the randomised defences (random resize-and-pad, Pixel Deflection, CIIDefence with
# random boxes) scored 10 times on every clean and gray-box adversarial image (FGSM, I-FGSM and PGD-10 at
# 2/255 and 4/255), the first 100 shared images, Lite0. One thread, so that it can run beside another job.
#   benchmarks/tables/draws.sh [--resume] [more ciid evaluate options]
set -euo pipefail
exec "${CIID:-ciid}" evaluate --threat graybox --data ../shared/data/imagenet-sample --out runs/draws44-graybox \
  --defences none,random-resize-pad,pixel-deflection,ciid-random-boxes --attacks fgsm,bim,pgd --eps 2/255,4/255 \
  --eval-draws 10 --limit 100 --no-sanity --threads 1 "$@"
