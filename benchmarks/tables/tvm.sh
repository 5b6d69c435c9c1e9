#!/bin/bash
# Issue 14's gray-box cells for TV minimisation (about 3 s per image per attack): the first 100 shared images,
# the attacks of graybox.sh. One thread.
#   benchmarks/tables/tvm.sh efficientnet_lite0 [--resume]
set -euo pipefail
MODEL=${1:?usage: tvm.sh MODEL [options]}; shift
exec "${CIID:-ciid}" evaluate --threat graybox --data ../shared/data/imagenet-sample --limit 100 \
  --out "runs/gray14-tvm-$MODEL" --model "$MODEL" --defences none,tvm \
  --attacks fgsm,bim,pgd,fgsm-l2,bim-l2,pgd-l2,deepfool,cw --eps 2/255,4/255 --eps-nl2 0.02,0.03,0.05 --eps-l2 "" \
  --threads 1 "$@"
