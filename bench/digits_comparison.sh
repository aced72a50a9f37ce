#!/usr/bin/env bash
# HyCAS against its baselines on digits at equal training budget (docs/results.md).
#
#   bash bench/digits_comparison.sh [OUTPUT_DIR]      # default docs/results
#
# Trains every model into a scratch repository (the shipped one is left alone), evaluates each
# on the 450-image test split (CERTIFY n0 = 100, n = 10,000, alpha = 0.001; margin over K = 16
# frozen draws), writes <OUTPUT_DIR>/<model>.json and .png, then the comparison table and plot.
# Every run: 300 epochs, batch 64, one-cycle Adam peaking at 3e-3, seed 0, two CPU threads.
# About 80 minutes on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
output=${1:-docs/results}
repository=$(mktemp -d)
trap 'rm -rf "$repository"' EXIT
mkdir -p "$output"

budget=(--epochs 300 --batch-size 64 --learning-rate 0.003 --seed 0 --threads 2
        --eval-n0 100 --eval-n 10000 --eval-alpha 0.001 --eval-batch-size 1000
        --eval-ensemble 16 --repository "$repository" --no-progress)
margin=(--logit-scale 10.0 --margin-weight 0.15 --margin-radius 0.75)
noise_only=(--logit-scale 10.0 --margin-weight 0)

train() {
    local id=$1
    shift
    hycas train --model-id "$id" --dataset digits "$@" "${budget[@]}" --report "$output/$id"
}

# sigma = 0.25: HyCAS, the same Lipschitz network without its random parts, a plain CNN.
train digits-hycas --architecture hycas --sigma 0.25 "${margin[@]}"
train digits-lipschitz --architecture lipschitz --sigma 0.25 "${margin[@]}"
train digits-hycas-noise --architecture hycas --sigma 0.25 "${noise_only[@]}"
train digits-lipschitz-noise --architecture lipschitz --sigma 0.25 "${noise_only[@]}"
train digits-cnn --architecture cnn --sigma 0.25 --logit-scale 1.0 --margin-weight 0
# sigma = 0.5: larger radii for smoothing, at a cost in clean accuracy.
train digits-hycas-s05 --architecture hycas --sigma 0.5 "${margin[@]}"
train digits-cnn-s05 --architecture cnn --sigma 0.5 --logit-scale 1.0 --margin-weight 0

python bench/compare_certified_accuracy.py \
    "HyCAS (noise + margin)=$output/digits-hycas.json" \
    "Lipschitz, no random parts (noise + margin)=$output/digits-lipschitz.json" \
    "HyCAS (noise only)=$output/digits-hycas-noise.json" \
    "Lipschitz, no random parts (noise only)=$output/digits-lipschitz-noise.json" \
    "plain CNN (noise, Cohen et al.)=$output/digits-cnn.json" \
    --plot "$output/digits-sigma0.25.png" --title "digits test split (450 images), σ = 0.25"
python bench/compare_certified_accuracy.py \
    "HyCAS (noise + margin)=$output/digits-hycas-s05.json" \
    "plain CNN (noise, Cohen et al.)=$output/digits-cnn-s05.json" \
    --plot "$output/digits-sigma0.5.png" --title "digits test split (450 images), σ = 0.5"
