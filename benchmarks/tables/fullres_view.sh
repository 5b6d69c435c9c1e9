#!/bin/bash
# Issue 43's third protocol: attacks made on each image at its own resolution (as for fullres.sh), defences given
# the classifier's 224 px view of the attacked image (a deployment that resizes before it defends); the first 100
# shared images, the defences the full-resolution table found strongest, one draw. One thread.
#   benchmarks/tables/fullres_view.sh [--resume] [more ciid evaluate options]
set -euo pipefail
exec "${CIID:-ciid}" evaluate --threat graybox --data ../shared/data/imagenet-sample --out runs/fullview43 \
  --resolution full-then-view --defences none,ciid,pixel-deflection,jpeg,random-resize-pad \
  --attacks fgsm,bim,pgd --eps 2/255,4/255 --eval-draws 1 --limit 100 --no-sanity --threads 1 "$@"
