#!/usr/bin/env bash
# Reproduce He, Liu & Tao (NeurIPS 2019): 1,600 models, Tables 1-3, Figures 1-2, the bound.
#
# Cost: about 3.1e19 FLOP and 180 million SGD steps (scripts/bench_train.py prints the
# projection for the device it runs on; packing 20 learning rates per fit is what makes
# it affordable). On 2 CPU cores it is out of reach (years); plan on GPUs:
#   kerasgen run ... --workers <number of GPUs>      one machine, one worker per GPU
#   kerasgen run ... --backend ray --address auto    a Ray cluster (see README)
#
# Data: put cifar-10-binary.tar.gz and cifar-100-binary.tar.gz in data/ (or let
# tensorflow-datasets download them when the network is reachable).
# Every step is resumable: run the same command again after any interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
DB=${DB:-data/paper.db}
FIGURES=${FIGURES:-data/paper-figures}
WORKERS=${WORKERS:-1}

# 1. Train the 1,600 cells (ResNet-110 and VGG-19-BN x CIFAR-10/100 x 20 batch sizes x
#    20 learning rates, plain SGD, 200 epochs, test accuracy every epoch).
kerasgen run --preset paper --db "$DB" --workers "$WORKERS" "$@"

# 2. The 164 Spearman tests (Tables 1-3) and Figures 1-2, plus what the paper leaves out
#    (generalization gap, final accuracy, the premise that every cell reached ~zero
#    training error).
kerasgen report --db "$DB" --figures "$FIGURES" --output "$FIGURES/tables.md"
kerasgen report --db "$DB" --format latex --output "$FIGURES/tables.tex"

# 3. The PAC-Bayes bound (Theorems 1-2) at every finished cell, on the classifier layer
#    (exact matrices), and its Spearman correlation with the ratio and the measured gap.
kerasgen bound --db "$DB" --params classifier
kerasgen report --db "$DB" --bounds --figures "$FIGURES" --output "$FIGURES/tables-with-bounds.md"
