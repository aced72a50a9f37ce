#!/usr/bin/env bash
# The GPU checks and figures in one run, each section bounded in time and written to its own
# file as it goes (a section that fails or runs out of time leaves the others standing):
#
#     bash bench/gpu_checks.sh [OUTPUT_DIR]      # default: gpu-results
#
#   env        the device, the driver, torch
#   cuda-tests the CUDA tests (engine on the device, no host sync per batch, replay, TF32 off)
#   batching   bench/bench_gpu_batching.py: merged jobs against the raw forward pass
#   step-*     bench/bench_training_step.py --device cuda (float32 and bfloat16 rows, and the
#              steps captured whole in CUDA graphs)
#   epoch-*    bench/bench_training_epoch.py --device cuda, float32 and bfloat16
#   train      the shipped card's command on the GPU in bfloat16 (EPOCHS, default 300: the
#              full recipe), then the package loaded (its bound re-certified), its card printed
#
# SECTIONS (default: all, in the order above) runs some of them: SECTIONS="batching train".
#
# It needs torch with CUDA and the packages the certificates and training import (numpy,
# scipy, scikit-learn, safetensors, prometheus-client, pytest); the web stack is not needed.
set -u
out=${1:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}

section() {
  local name=$1 limit=$2 started=$SECONDS status
  shift 2
  case " ${SECTIONS:-$name} " in *" ${name%%-*} "* | *" $name "*) ;; *) return ;; esac
  echo "== $name (at most ${limit} s)"
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  status=$?
  echo "exit $status after $((SECONDS - started)) s" >>"$out/$name.txt"
  tail -n 25 "$out/$name.txt"
}

section env 30 bash -c "nvidia-smi; $py -c 'import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
section cuda-tests 120 "$py" -m pytest -p no:cacheprovider -o addopts= -q -rs \
  tests/certify/test_cuda.py \
  tests/certify/test_margin.py::test_certifying_for_cuda_turns_tensorfloat32_off
section batching 200 "$py" bench/bench_gpu_batching.py --seconds 2 --max-seconds 6
section step-1x28x28 90 "$py" bench/bench_training_step.py --device cuda --shape 1,28,28 \
  --repeats 20 --profile-steps 0 --bfloat16 --cuda-graph
section step-3x32x32 90 "$py" bench/bench_training_step.py --device cuda --shape 3,32,32 \
  --repeats 20 --profile-steps 0 --bfloat16 --cuda-graph
section epoch-float32 60 "$py" bench/bench_training_epoch.py --device cuda
section epoch-bfloat16 60 "$py" bench/bench_training_epoch.py --device cuda --precision bfloat16
rm -rf "$out/repository"
section train 400 "$py" -m service.cli train --model-id digits-hycas --dataset digits \
  --architecture hycas --sigma 0.25 --epochs "${EPOCHS:-300}" --batch-size 64 --learning-rate 0.003 \
  --logit-scale 10.0 --margin-weight 0.15 --margin-radius 0.75 --seed 0 --eval-n0 100 \
  --eval-n 10000 --eval-alpha 0.001 --eval-batch-size 1000 --eval-ensemble 16 \
  --device cuda --precision bfloat16 --quiet \
  --repository "$out/repository" --report "$out/train-report.md"
section load 30 "$py" -c "
import json, models
model, card = models.load('digits-hycas', repository='$out/repository', device='cuda')
print('loaded on', next(model.parameters()).device, 'bound', card.lipschitz_bound)
print(json.dumps(card.metrics, indent=1)[:3000])
"
