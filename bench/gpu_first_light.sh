#!/usr/bin/env bash
# First light on a GPU, as one command: every step of bench/RESULTS_GPU_TODO.md in order, each under
# its own time limit and all under one budget, every log in one folder, a summary table at the end.
#
#   bash bench/gpu_first_light.sh [--out DIR] [--bundle DIR] [--budget SECONDS] [--carry DIR] [--dry-run]
#
#   --out DIR       logs/STEP.log per step, steps.jsonl, summary.md, summary.json (default gpu_first_light_out)
#   --bundle DIR    also copy summary.md, summary.json and logs.tar.gz (every log) there
#   --budget S      seconds for the whole script (default 500); a step that would start with under
#                   20 s left is skipped, and each step's limit is cut to what is left
#   --carry DIR     what a machine without network needs (default .gpu_carry): DIR/whl/*.whl are
#                   installed first (e.g. the tested transformers), DIR/*.tar.gz are the mamba_ssm and
#                   causal_conv1d source archives (`pip download --no-deps --no-binary :all: ...`)
#   --dry-run       write the layout and the summary with each step's command, run nothing
#
# Steps: env (torch CUDA build, device) -> install (biomamba, no deps) -> build-ours (kernels/cuda
# for this GPU's architecture only) while build-mamba_ssm and build-causal_conv1d run beside it ->
# pytest-gpu (-m gpu) -> import-mamba_ssm and its SSD test -> scan-gpu (bench/scan_gpu.py --check and
# the 130m-shape table) -> ssd (bench/ssd.py) -> data (random tokens) -> pretrain (130m Mamba-1 /
# Mamba-2, 200 steps, bf16, against transformers) -> resume (kill and rerun on the GPU). A peer build
# is waited for only where it is needed, and only as long as the budget allows.
# A failed step does not stop the next; the exit code is 0 only if every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT_DIR=gpu_first_light_out
BUNDLE=""
BUDGET=500
CARRY=.gpu_carry
DRY_RUN=0
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT_DIR=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --carry) CARRY=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_first_light.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$BUDGET" in ''|*[!0-9]*) echo "gpu_first_light.sh: --budget takes whole seconds, got '$BUDGET'" >&2; exit 2 ;; esac

mkdir -p "$OUT_DIR/logs"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR/steps.jsonl" "$OUT_DIR"/logs/*.log
START=$(date +%s)
SITE=$OUT_DIR/site          # carried wheels are installed here, ahead of the machine's own packages
PEERS=$OUT_DIR/peers        # mamba_ssm / causal_conv1d builds and sources
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

$PY - "$OUT_DIR/header.json" "$BUDGET" "$DRY_RUN" <<'EOF'
import datetime, json, platform, subprocess, sys
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
json.dump({"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "host": platform.node(), "commit": commit or "unknown", "budget_s": int(sys.argv[2]),
           "dry_run": sys.argv[3] == "1", "command": "bash bench/gpu_first_light.sh"},
          open(sys.argv[1], "w"), indent=1)
EOF

seconds_left() { echo $(( BUDGET - ($(date +%s) - START) )); }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
since() { local ms=$(( $(now_ms) - $1 )); printf '%d.%03d' $(( ms / 1000 )) $(( ms % 1000 )); }  # seconds since $1 (ms)

record() {  # name rc seconds limit [--skipped|--dry-run]
  $PY bench/gpu_summary.py record --out "$OUT_DIR" --name "$1" --rc "$2" --seconds "$3" --limit "$4" ${5:-}
}

# step NAME LIMIT COMMAND: run COMMAND (a bash string) under min(LIMIT, what is left), log it, record it.
step() {
  local name=$1 limit=$2 command=$3 log="$OUT_DIR/logs/$1.log" left t0 rc
  if [ "$DRY_RUN" = 1 ]; then
    printf '%s\n' "$command" > "$log"; record "$name" 0 0 "$limit" --dry-run; return 0
  fi
  left=$(( $(seconds_left) - 10 ))
  if [ "$left" -lt 20 ]; then
    echo "not run: $left s left of the budget" > "$log"; record "$name" 0 0 "$limit" --skipped; return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "[gpu-first-light] $name (limit $limit s): $command"
  t0=$(now_ms)
  { echo "\$ $command"; timeout --kill-after=10 "$limit" bash -c "$command"; } > "$log" 2>&1
  rc=$?
  record "$name" "$rc" "$(since "$t0")" "$limit"
  return $rc
}

step env 60 "nvidia-smi; $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda); \
print(\"device\", torch.cuda.get_device_name(0), \"capability\", torch.cuda.get_device_capability(0))'; \
nvcc --version | tail -2; nproc; free -g | head -2"

# `pip install .`, not -e: setuptools' develop path asks the network for setuptools (2026-12-04)
step install 150 "if ls $CARRY/whl/*.whl >/dev/null 2>&1; then $PY -m pip install -q --no-index --no-deps \
--no-compile --target $SITE $CARRY/whl/*.whl; fi; $PY -m pip install -q --no-index --no-deps --no-build-isolation . && $PY -c 'import biomamba, transformers; print(\"biomamba\", biomamba.__file__, \"transformers\", transformers.__version__)'"

# mamba_ssm and causal_conv1d compile for minutes: each in the background, beside our own build.
PEERS_LIMIT=420
declare -A PEER_PID PEER_T0
start_peer() {  # package
  if [ "$DRY_RUN" = 1 ]; then return; fi
  PEER_T0[$1]=$(now_ms)
  timeout --kill-after=10 "$PEERS_LIMIT" $PY bench/gpu_build_peers.py --sources "$CARRY" --out "$PEERS" --only "$1" \
    > "$OUT_DIR/logs/build-$1.log" 2>&1 &
  PEER_PID[$1]=$!
}
# finish_peer PACKAGE WAIT: wait up to WAIT s (or what the budget leaves) for its build; if it built, put
# it on PYTHONPATH once it imports (a half-built mamba_ssm on the path would break transformers' Mamba).
finish_peer() {
  local package=$1 wait_s=$2 pid=${PEER_PID[$1]:-} rc waited=0
  if [ "$DRY_RUN" = 1 ]; then record "build-$package" 0 0 "$PEERS_LIMIT" --dry-run; return 0; fi
  [ -n "$pid" ] || return 1
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$wait_s" ] && [ "$(seconds_left)" -gt 60 ]; do
    sleep 2; waited=$(( waited + 2 ))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -- "$pid" 2>/dev/null; wait "$pid"; rc=124
  else
    wait "$pid"; rc=$?
  fi
  record "build-$package" "$rc" "$(since "${PEER_T0[$package]}")" "$PEERS_LIMIT"
  PEER_PID[$package]=""
  [ "$rc" = 0 ] || return 1
  local old=$PYTHONPATH
  export PYTHONPATH=$PEERS:$(ls -d "$PEERS/$package"-* | head -1):$PYTHONPATH
  step "import-$package" 60 "$PY -c 'import $package; print(\"$package\", $package.__version__, $package.__file__)'" \
    || export PYTHONPATH=$old
}
# causal_conv1d first: its three large files took longest on the first run (over 330 s beside the rest)
start_peer causal_conv1d
start_peer mamba_ssm

step build-ours 240 "BIOMAMBA_VERBOSE_BUILD=1 $PY -c 'import time; from biomamba.ops import cuda; t = time.time(); \
cuda.check_available(); print(\"kernels/cuda built and loaded in %.0f s\" % (time.time() - t))'"

# pytest-xdist (when installed) keeps going past a test that crashes its process, and is faster.
XDIST=$($PY -c 'import xdist' 2>/dev/null && echo "-n 4")
step pytest-gpu 200 "$PY -m pytest -q -rs -p no:cacheprovider $XDIST -m gpu tests/test_kernels_cuda.py tests/test_ssd.py"

# the scan table wants mamba_ssm beside ours: wait for its build, then run its SSD test too
finish_peer mamba_ssm 150 && step pytest-mamba-ssm 90 "$PY -m pytest -q -rs -p no:cacheprovider -m gpu tests/test_ssd.py -k mamba_ssm"
step scan-gpu 150 "$PY bench/scan_gpu.py --check"
step ssd 90 "$PY bench/ssd.py --quick --device cuda"
step data 90 "$PY bench/random_tokens_data.py $OUT_DIR/data --vocab-size 50277 --train-tokens 4000000 --val-tokens 200000"
finish_peer causal_conv1d 30   # transformers' Mamba uses both packages' kernels when they import
step pretrain 300 "$PY bench/gpu_pretrain.py throughput --data $OUT_DIR/data --out $OUT_DIR/pretrain --steps 200"
step resume 150 "$PY bench/gpu_pretrain.py resume --data $OUT_DIR/data --out $OUT_DIR/pretrain"

for package in "${!PEER_PID[@]}"; do  # a build still running at the end: stop it, say so
  [ -n "${PEER_PID[$package]}" ] && kill -- "${PEER_PID[$package]}" 2>/dev/null \
    && record "build-$package" 124 "$(since "${PEER_T0[$package]}")" "$PEERS_LIMIT"
done
$PY bench/gpu_summary.py write --out "$OUT_DIR"
if [ -n "$BUNDLE" ]; then
  mkdir -p "$BUNDLE"
  tar czf "$BUNDLE/logs.tar.gz" -C "$OUT_DIR" logs steps.jsonl header.json \
    $(cd "$OUT_DIR" && ls pretrain/*.json 2>/dev/null)
  cp "$OUT_DIR/summary.md" "$OUT_DIR/summary.json" "$BUNDLE/"
fi
tail -n +1 "$OUT_DIR/steps.jsonl" | $PY -c 'import json, sys; rows = [json.loads(l) for l in sys.stdin]; \
sys.exit(0 if all(r["status"] in ("ok", "dry run") for r in rows) else 1)'
