#!/usr/bin/env bash
# CPU backend against its peers on the same cores, interleaved in one run (BENCHMARKS.md,
# "Side by side with Keras and PyTorch"). Needs a venv with torch and tensorflow-cpu:
#   python3 -m venv venv && venv/bin/pip install torch tensorflow-cpu
# usage: scripts/cpu-peers.sh BINARY PYTHON DATA_DIR PEERS_DIR   (PEERS_DIR: ../shared/bench)
set -euo pipefail
bin=$1 py=$2 data=$3 peers=$4
round() {
  echo "== round $1: fmnist-gpu CPU backend, Adam"
  "$bin" bench --device cpu --optimizer adam --batch-sizes 128,512 --steps 20 --windows 5 --warmup 3 --json \
    | "$py" -c 'import json,sys; [print(json.dumps({k: b[k] for k in ("batch_size", "images_per_second", "best_images_per_second", "window_images_per_second", "achieved_gflops")})) for b in json.load(sys.stdin)["results"]]'
  echo "== round $1: PyTorch eager, 2 threads"
  "$py" "$peers/torch_cpu_peer.py" "$data" --batch-sizes 128,512 --modes eager --steps 20 --windows 5
  echo "== round $1: Keras/TensorFlow, batch 128, 3 epochs"
  "$py" "$peers/keras_cpu_peer.py" "$data" 3 128
  echo "== round $1: Keras/TensorFlow, batch 512, 3 epochs"
  "$py" "$peers/keras_cpu_peer.py" "$data" 3 512
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), load $(cut -d' ' -f1-3 /proc/loadavg)"
round 1
round 2
echo "== PyTorch torch.compile (inductor), 2 threads"
"$py" "$peers/torch_cpu_peer.py" "$data" --batch-sizes 128,512 --modes compile --steps 20 --windows 5
echo "load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
