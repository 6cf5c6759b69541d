#!/usr/bin/env bash
# The silver BLURB-style comparison (README, "Fine-tuning in BLURB's shapes"): chemical NER (entity F1) and
# MeSH multi-label (micro-F1), test split, every model at the same budget, then `report finetune`.
#   bash bench/finetune_silver.sh PREPARED TINY_BIOMAMBA BERT OUT [SEEDS]
# PREPARED: `biomamba prepare --out DIR` on the embedded data (with the silver tasks); TINY_BIOMAMBA: a
# pretrained tiny run (configs/tiny-cpu.yaml); BERT: the same-budget BERT (configs/bert-tiny-cpu.yaml).
set -euo pipefail
PREPARED=$1; MAMBA=$2; BERT=$3; OUT=$4; SEEDS=${5:-1,2,3}
# one budget for every model: 150 steps x 16, lr 1e-3 (BERT's pretraining peak; 3e-4 is finetune's default),
# 1,000 train / 300 val / 300 test examples (the same hash subset for every model), 128 tokens
BUDGET=(--seeds "$SEEDS" data.dir="$PREPARED" data.max_train_examples=1000 data.max_eval_examples=300
        data.max_length=128 train.max_steps=150 train.batch_size=16 train.eval_every=50 train.save_every=50
        optim.lr=1e-3 optim.warmup_steps=15 logging.wandb=false)
run() {  # NAME TASK MODEL [overrides...]
  local name=$1 task=$2 model=$3; shift 3
  echo "== $name $(date -u +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg)"
  nice -n 10 biomamba finetune --task "$task" --model "$model" --out "$OUT/$name" "${BUDGET[@]}" "$@"
}
for task in chemical-ner mesh-labels; do
  run "$task-mamba" "$task" "$MAMBA"
  [ "$task" = chemical-ner ] && run "$task-mamba-bidirectional" "$task" "$MAMBA" model.bidirectional=true
  run "$task-bert" "$task" "$BERT"
  run "$task-mamba-random" "$task" "$MAMBA" model.init=random
  [ "$task" = chemical-ner ] && run "$task-mamba-bidirectional-random" "$task" "$MAMBA" model.bidirectional=true model.init=random
  run "$task-bert-random" "$task" "$BERT" model.init=random
done
biomamba report finetune "$OUT"/*/ --out "$OUT"
