#!/usr/bin/env bash
# One prepared device check for an NVIDIA (or any hardware) GPU machine, meant for one run of at
# most 8 minutes: adapters, the kernel table and every PyTorch fixture on the hardware adapter,
# `tune` (twice: miss, then hit), `bench` at batch 128 and 512 beside PyTorch's eager and
# CUDA-graph steps measured in the same command, a 15-epoch training run, and the device's
# cooperative-matrix properties. Everything lands in $OUT (default ./gpu-check-out).
#
# Prepare on the build machine (no Rust toolchain is needed on the GPU machine):
#   cargo build --release
#   mkdir -p .devcheck && cp ../shared/bench/pytorch_peer.py ../shared/fixtures/*.safetensors .devcheck/
#   mkdir -p .devcheck/data && cp /usr/share/datasets/fashion-mnist/*.gz .devcheck/data/
#   (.devcheck/ is ignored by git; carry it, target/release/fmnist-gpu and the Vulkan loader.)
# Run there:  bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
B=${FMNIST_BIN:-target/release/fmnist-gpu}
D=.devcheck
ADAPTER=${ADAPTER:-discrete}
export FMNIST_TUNE_CACHE="$OUT/tune-cache" RUST_LOG=${RUST_LOG:-info}
log() { echo "== $(date -u +%T) $*" | tee -a "$OUT/summary.txt"; }
step() { # name, timeout seconds, command...
  local name=$1 secs=$2; shift 2
  log "$name: $*"
  timeout "$secs" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err"
  local rc=$?
  log "$name: exit $rc"
  tail -n 3 "$OUT/$name.err" | sed 's/^/   /' >>"$OUT/summary.txt"
  return $rc
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/nvidia-smi.txt" 2>&1
step adapters 30 "$B" adapters --json
step kernel-table 120 "$B" parity --adapter "$ADAPTER" --json
for fx in "$D"/torch_step_b*_h*.safetensors; do
  [ -f "$fx" ] && step "fixture-$(basename "$fx" .safetensors)" 60 "$B" parity --fixture "$fx" --adapter "$ADAPTER"
done
step tune-1 120 "$B" tune --adapter "$ADAPTER" --batch-sizes 128,512 --json
step tune-2 30 "$B" tune --adapter "$ADAPTER" --batch-sizes 128,512 --json
grep -o '"cache": *"[a-z]*"' "$OUT/tune-1.out" "$OUT/tune-2.out" | tee -a "$OUT/summary.txt"
step bench 150 "$B" bench --adapter "$ADAPTER" --batch-sizes 128,512 --optimizer adam --json
if [ -f "$D/pytorch_peer.py" ]; then
  step pytorch 200 python3 "$D/pytorch_peer.py" "$D/data" --modes eager,graph --batch-sizes 128,512 --optimizer adam
fi
step train 240 "$B" train --adapter "$ADAPTER" --data "$D/data" --epochs 15 --json --out "$OUT/run"
python3 - "$OUT" <<'PY' >>"$OUT/summary.txt" 2>&1
import json, sys, os
out = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(out, n + ".out")))
    except Exception as e: return None
b = load("bench")
if b:
    for r in b["results"]:
        print(f"bench b{r['batch_size']}: {r['images_per_second']:.0f} img/s (best window {r['best_images_per_second']:.0f}), "
              f"GPU pass {r.get('step_pass_seconds')} s, {r.get('dispatches_per_step')} dispatches/step, {r.get('steps_per_submit')} steps/submit")
t = load("train")
if t:
    print(f"train: test {t['test_accuracy']:.4f}, s/epoch {[round(e['seconds'], 2) for e in t['epochs']]}")
PY
# Cooperative-matrix properties, for a later f16 path (wgpu 30 exposes them on the adapter).
step coopmat 30 "$B" adapters --json --cooperative-matrix
log "done; files in $OUT"
