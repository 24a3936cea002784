#!/usr/bin/env python3
"""Reads a run directory's TensorBoard event files with TensorBoard's own loader.

Usage: tensorboard-check.py RUN_DIR [TAG ...]

Loads every events.out.tfevents.* file under RUN_DIR (each directory that holds some is one
TensorBoard run: a `train` run directory itself, or `<out>/tb/<run>/` of `compare` and `search`)
with tensorboard.backend.event_processing.event_accumulator.EventAccumulator and prints, per run,
each scalar tag with its number of points and its first and last (step, value). Exits 1 when a
run lacks an expected tag: the TAGs given, else epoch/train_loss, epoch/train_accuracy and
epoch/lr (the tags every run has; `train` runs also have step/train_loss, validated epochs
epoch/val_loss and epoch/val_accuracy). Needs `pip install tensorboard`; not run in CI.
"""
import os
import sys

from tensorboard.backend.event_processing import event_accumulator

DEFAULT_TAGS = ["epoch/train_loss", "epoch/train_accuracy", "epoch/lr"]


def run_dirs(root):
    """Every directory under root (root included) that holds an event file, sorted."""
    out = []
    for d, _, files in os.walk(root):
        if any(f.startswith("events.out.tfevents.") for f in files):
            out.append(d)
    return sorted(out)


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__.split("\n\n")[1])
    root, want = sys.argv[1], sys.argv[2:] or DEFAULT_TAGS
    dirs = run_dirs(root)
    if not dirs:
        print(f"error: no events.out.tfevents.* file under {root}", file=sys.stderr)
        return 1
    missing = 0
    for d in dirs:
        # size_guidance 0: keep every point (the default samples scalars down to 10,000).
        acc = event_accumulator.EventAccumulator(d, size_guidance={event_accumulator.SCALARS: 0})
        acc.Reload()
        tags = sorted(acc.Tags()["scalars"])
        print(f"{os.path.relpath(d, root) if d != root else d}: {len(tags)} scalar tags")
        for t in tags:
            ev = acc.Scalars(t)
            first, last = ev[0], ev[-1]
            print(f"  {t:<26} {len(ev):>5} points  first (step {first.step}, {first.value:.6g})"
                  f"  last (step {last.step}, {last.value:.6g})")
        lacking = [t for t in want if t not in tags]
        if lacking:
            print(f"  MISSING: {', '.join(lacking)}")
            missing += 1
    if missing:
        print(f"{missing} of {len(dirs)} runs lack expected tags", file=sys.stderr)
        return 1
    print(f"ok: {len(dirs)} runs, every one with {', '.join(want)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
