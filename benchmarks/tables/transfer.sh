#!/bin/bash
# Issue 14's transfer column: the attacks of graybox.sh made on EfficientNet-Lite2, every defence scored on
# EfficientNet-Lite0 (the black-box number), all 500 shared images. One thread.
#   benchmarks/tables/transfer.sh [--resume]
set -euo pipefail
exec "${CIID:-ciid}" evaluate --threat transfer --transfer-from efficientnet_lite2 --model efficientnet_lite0 \
  --data ../shared/data/imagenet-sample --out runs/transfer14-lite2-to-lite0 \
  --defences none,ciid,ciid-denoise-only,ciid-inpaint-only,ciid-k1,ciid-random-boxes,pixel-deflection,jpeg,bit-depth,median,random-resize-pad \
  --attacks fgsm,bim,pgd,fgsm-l2,bim-l2,pgd-l2,deepfool,cw --eps 2/255,4/255 --eps-nl2 0.02,0.03,0.05 --eps-l2 "" \
  --no-sanity --threads 1 "$@"
