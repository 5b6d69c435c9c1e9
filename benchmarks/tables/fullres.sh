#!/bin/bash
# Issue 43's gray-box table at each image's own resolution, as `ciid classify` and `purify` defend images: the
# README's defences, FGSM, I-FGSM and PGD-10 (random start) at 2/255 and 4/255, all 500 shared images, Lite0,
# one draw per randomised defence (as the 224 px view table, gray14-bounded, which it is compared with:
# `ciid report runs/fullres43 --compare runs/gray14-bounded-efficientnet_lite0`). One thread.
#   benchmarks/tables/fullres.sh [--resume] [more ciid evaluate options]
set -euo pipefail
exec "${CIID:-ciid}" evaluate --threat graybox --data ../shared/data/imagenet-sample --out runs/fullres43 \
  --resolution full --defences none,ciid,pixel-deflection,jpeg,random-resize-pad,median,bit-depth \
  --attacks fgsm,bim,pgd --eps 2/255,4/255 --eval-draws 1 --no-sanity --threads 1 "$@"
