#!/usr/bin/env bash
# Issue 8's speed figures of the full Wan2.1-T2V-1.3B stream on one lent GPU (1 H100, no internet,
# the repo copied in, python3 = the image's torch). Each call of the device tool runs <= 10 min, so:
#
#   bash bench/gpu_session.sh              # call 1: env + GEMM ceiling, eager 480x832 knot+self_forcing,
#                                          #   the same compiled, knot memory after 1 min, 512x512,
#                                          #   then CUDA graphs (--compile reduce-overhead) if time is left
#   bash bench/gpu_session.sh minutes10    # call 2 (optional): knot memory after 1/2/5/10 min of video
#
# Estimate (bench/flops.py): a knot chunk at 480x832 is 169 TFLOP of DiT + ~40 TFLOP of VAE decode
# (FlopCounterMode, scaled from 64x64); eager at ~40% of peak gives ~0.6-0.8 s per chunk of 12 frames.
# So 40 chunks x 2 strategies ~1.5 min, compiled ~3-4 min (compilation included), 1 min of video
# (80 chunks) ~1 min, 512x512 ~1 min; 10 min of video is 800 chunks ~9-10 min: a call of its own.
# Steps run in priority order, each under `timeout` inside the call's budget (BUDGET_S); a failing
# or timed-out step is noted and the rest go on. Marks of --minutes are printed as reached, so a run
# stopped by its limit still reports the ones it got. $OUT gets env.txt, session.log (everything
# printed) and one JSON per step: the device returns at most 8 files. Tables are printed last.
# CPU smoke test of the plumbing: MODEL="--preset tiny --device cpu" CHUNKS=6 OUT=/tmp/gs bash bench/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/knot_bench}
PY=${PY:-python3}
BUDGET_S=${BUDGET_S:-570}  # leaves ~30 s of the 600 s command limit for the summary
MODEL=${MODEL:---preset wan2.1-t2v-1.3b --device cuda --dtype bf16 --vae full}
CHUNKS=${CHUNKS:-40}
WARMUP=${WARMUP:-4}  # compilation, and the window filling up (self_forcing: 9 frames = 3 chunks)
START=$(date +%s)
LOG=$OUT/session.log
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"

note() { echo "== $*" | tee -a "$LOG"; }

step() {  # step NAME MAX_S ARGS...: one bench run, bounded by MAX_S and by what is left of the budget
  local name=$1 max=$2 left limit rc
  shift 2
  left=$((BUDGET_S - ($(date +%s) - START)))
  limit=$((max < left ? max : left))
  if ((limit < 30)); then note "$name: skipped, ${left}s of the budget left"; return; fi
  note "$name (limit ${limit}s): $MODEL --warmup $WARMUP $*"
  # shellcheck disable=SC2086  # MODEL is a list of flags
  timeout "$limit" "$PY" bench/stream_speed.py $MODEL --warmup "$WARMUP" "$@" --json "$OUT/$name.json" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || note "$name: FAILED rc=$rc (124 = hit its time limit); going on"
}

environment() {  # versions, the card as found, and the bf16 GEMM ceiling (METHOD.md: measure it once)
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
  "$PY" - <<'EOF' || true
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    torch.cuda.synchronize()
    print(f"bf16 8192^3 GEMM: {20 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12:.0f} TFLOP/s")
EOF
}

summary() {
  "$PY" - "$OUT" <<'EOF' 2>&1 | tee -a "$LOG"
import json, sys
from pathlib import Path
sys.path.insert(0, ".")
from bench.stream_speed import table
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    print(f"\n== {path.stem}\n{table(json.loads(path.read_text()))}")
EOF
}

if [[ "${1:-}" == minutes10 ]]; then
  BUDGET_S=585
  step minutes_10 585 --strategy knot --height 480 --width 832 --minutes 1 2 5 10
else
  environment 2>&1 | tee "$OUT/env.txt" | tee -a "$LOG"
  note "correctness on the GPU: tests/test_gpu.py"
  timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee -a "$LOG"
  ((PIPESTATUS[0] == 0)) || note "GPU tests FAILED; going on"
  step eager_480x832 240 --strategy knot self_forcing --height 480 --width 832 --chunks "$CHUNKS"
  step compile_480x832 300 --strategy knot self_forcing --height 480 --width 832 --chunks "$CHUNKS" --compile default
  step minutes_1 150 --strategy knot --height 480 --width 832 --minutes 1
  step eager_512x512 120 --strategy knot self_forcing --height 512 --width 512 --chunks "$CHUNKS"
  step cudagraphs_480x832 200 --strategy knot --height 480 --width 832 --chunks 12 --compile reduce-overhead
fi
note "done in $(($(date +%s) - START)) s"
summary
