#!/usr/bin/env bash
# A short follow-up to bench/gpu_first_light.sh for what its 2026-12-04 runs left open, in about
# 300 s: the bf16 conv tests by the 2x-torch rule, resume after a kill, and the 130m training
# comparison against transformers with mamba_ssm's and causal_conv1d's kernels (both built here,
# each in its own folder, beside the rest).
#
#   bash bench/gpu_followup.sh OUT_DIR        # logs and JSON under OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash bench/gpu_followup.sh OUT_DIR}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
SITE=/tmp/followup_site PEERS=/tmp/followup_peers DATA=/tmp/followup_data RUNS=/tmp/followup_runs
python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .gpu_carry/whl/*.whl
export PYTHONPATH=$SITE
python3 -m pip install -q --no-index --no-deps --no-build-isolation . > "$OUT/install.log" 2>&1
start=$(date +%s)
for package in causal_conv1d mamba_ssm; do
  timeout 240 python3 bench/gpu_build_peers.py --sources .gpu_carry --out $PEERS --only $package \
    > "$OUT/build-$package.log" 2>&1 &
done
echo "== pytest -m gpu conv1d"
timeout 90 python3 -m pytest -q -p no:cacheprovider -n 4 -m gpu tests/test_kernels_cuda.py -k conv1d 2>&1 | tail -4
python3 bench/random_tokens_data.py $DATA --vocab-size 50277 --train-tokens 2000000 --val-tokens 100000
echo "== resume"
timeout 80 python3 bench/gpu_pretrain.py resume --data $DATA --out $RUNS 2>&1 | tail -8
echo "== peers' builds (waited for at most 250 s from the start)"
while [ -n "$(jobs -r)" ] && [ $(( $(date +%s) - start )) -lt 250 ]; do sleep 2; done
tail -n 2 "$OUT"/build-*.log
export PYTHONPATH=$PEERS:$(ls -d $PEERS/mamba_ssm-* | head -1):$(ls -d $PEERS/causal_conv1d-* | head -1):$SITE
python3 -c 'import causal_conv1d, mamba_ssm; print("peers import:", mamba_ssm.__version__, causal_conv1d.__version__)'
echo "== 130m training, ours against transformers (+ its kernels when they import)"
timeout 120 python3 bench/gpu_pretrain.py throughput --data $DATA --out $RUNS/throughput --steps 60 \
  --peer-steps 25 --peer-seconds 15 2>&1 | grep -v "Writing model shards" | tail -12
cp $RUNS/*.json $RUNS/throughput/*.json "$OUT/" 2>/dev/null
echo "followup done in $(( $(date +%s) - start )) s"
