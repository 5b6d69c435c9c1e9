#!/bin/bash
# Issue 14's gray-box table for one classifier: all 500 shared images, every defence but TV minimisation
# (see tvm.sh), FGSM, I-FGSM and PGD-10 at 2/255 and 4/255 and at the papers' normalised L2 budgets, DeepFool,
# C&W, and the sanity checks. One thread, so that it can run beside another job on a 2-core machine.
#   benchmarks/tables/graybox.sh efficientnet_lite0 [--resume] [more ciid evaluate options]
set -euo pipefail
MODEL=${1:?usage: graybox.sh MODEL [options]}; shift
exec "${CIID:-ciid}" evaluate --threat graybox --data ../shared/data/imagenet-sample --out "runs/gray14-$MODEL" \
  --model "$MODEL" \
  --defences none,ciid,ciid-denoise-only,ciid-inpaint-only,ciid-k1,ciid-random-boxes,pixel-deflection,jpeg,bit-depth,median,random-resize-pad \
  --attacks fgsm,bim,pgd,fgsm-l2,bim-l2,pgd-l2,deepfool,cw --eps 2/255,4/255 --eps-nl2 0.02,0.03,0.05 --eps-l2 "" \
  --threads 1 "$@"
