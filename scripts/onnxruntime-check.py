#!/usr/bin/env python3
"""Runs an `fmnist-gpu export` file in onnxruntime on the Fashion-MNIST test set.

Usage: onnxruntime-check.py MODEL.onnx DATA_DIR [CPU_LOGITS.f32]

Prints the accuracy on the 10,000 test images and whether argmax(logits) and
argmax(probabilities) agree. With CPU_LOGITS.f32 (little-endian f32 [n,10], the CPU backend's
logits of the first n test images, as `FMNIST_ONNX_DUMP=DIR cargo test --release --test onnx`
leaves them), also the worst |difference| to them and the argmax agreement with them.
Needs `pip install onnxruntime numpy`; not run in CI.
"""
import gzip
import os
import sys

import numpy as np
import onnxruntime as ort


def idx(path):
    """An IDX file (raw or .gz) as a numpy array; its header gives the dimensions."""
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with (gzip.open if p.endswith(".gz") else open)(p, "rb") as f:
                data = f.read()
            ndim = data[3]
            shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
            return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    sys.exit(f"error: {path}[.gz] not found")


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__.split("\n\n")[1])
    model, data = sys.argv[1], sys.argv[2]
    x = idx(os.path.join(data, "t10k-images-idx3-ubyte")).astype(np.float32)[:, None] / 255
    y = idx(os.path.join(data, "t10k-labels-idx1-ubyte"))
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    # Batches of 1,000 keep conv1's activations (1.5 GB for all 10,000 at once) small.
    runs = [sess.run(["logits", "probabilities"], {"image": x[i:i + 1000]})
            for i in range(0, len(x), 1000)]
    logits = np.concatenate([r[0] for r in runs])
    probs = np.concatenate([r[1] for r in runs])
    pred = logits.argmax(1)
    print(f"accuracy {np.mean(pred == y):.4f} on {len(y)} test images")
    print(f"argmax(logits) == argmax(probabilities): {np.mean(pred == probs.argmax(1)):.4f}")
    print(f"max |sum(probabilities) - 1|: {np.abs(probs.sum(1) - 1).max():.3e}")
    if len(sys.argv) == 4:
        ref = np.fromfile(sys.argv[3], "<f4").reshape(-1, 10)
        n = len(ref)
        d = np.abs(logits[:n] - ref)
        print(f"vs CPU backend on {n} images: max |logit diff| {d.max():.3e}, "
              f"argmax agreement {np.mean(pred[:n] == ref.argmax(1)):.4f}")


if __name__ == "__main__":
    main()
