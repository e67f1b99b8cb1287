"""Lesion-CNN benchmark: training seconds per epoch, inference lesions/s, peak memory.

Runs the real training and inference code (``train_lesion_cnn``, ``predict_lesion_cnn``) on
synthetic patches of each preset's shape, so it measures compute and not disk or
patch-extraction speed. CPU always; CUDA too when torch sees a GPU.

    python benchmarks/deep.py                      # small + full presets, defaults below
    python benchmarks/deep.py --configs small --lesions 256 --epochs 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from typing import Any

import numpy as np
import psutil
import torch

from irtscope.imaging._deep import (
    DeepConfig,
    predict_lesion_cnn,
    seed_everything,
    train_lesion_cnn,
)


def _synthetic(config: DeepConfig, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    size, channels = config.patch.size, config.patch.channels
    patches = rng.random((n, channels, size, size, size), dtype=np.float32)
    y = np.tile([0, 1], n // 2 + 1)[:n]
    groups = np.repeat(np.arange(n // 3 + 1), 3)[:n]
    return patches, y, groups


def bench(name: str, device: str, n_train: int, n_infer: int, epochs: int) -> dict[str, Any]:
    """Time ``epochs`` epochs of training on ``n_train`` lesions and inference on ``n_infer``."""
    config = DeepConfig.preset(name).updated(epochs=epochs, patience=epochs)
    patches, y, groups = _synthetic(config, max(n_train, n_infer), seed=0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = psutil.Process().memory_info().rss
    trained = train_lesion_cnn(
        patches[:n_train], y[:n_train], groups[:n_train], config, device=device, random_state=0
    )
    seconds = [h["seconds"] for h in trained.history]
    # first epoch includes one-off costs (allocator warm-up, cuDNN autotune): report both
    predict_lesion_cnn(trained, patches[: min(8, n_infer)])  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    predict_lesion_cnn(trained, patches[:n_infer])
    if device == "cuda":
        torch.cuda.synchronize()
    infer_s = time.perf_counter() - tic
    patch = config.patch
    result = {
        "config": name,
        "device": device,
        "architecture": config.architecture,
        "patch": f"{patch.size}^3 x {patch.channels}ch @ {patch.spacing_mm} mm",
        "parameters": sum(p.numel() for p in trained.model.parameters()),
        "train_lesions": n_train,
        "epochs": len(seconds),
        "first_epoch_s": round(seconds[0], 3),
        "epoch_s": round(float(np.median(seconds[1:] if len(seconds) > 1 else seconds)), 3),
        "infer_lesions": n_infer,
        "infer_lesions_per_s": round(n_infer / infer_s, 1),
        "rss_growth_mb": round((psutil.Process().memory_info().rss - rss_before) / 2**20, 1),
        # ru_maxrss is in KiB on Linux: the process's high-water mark so far (all configs)
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if device == "cuda":
        result["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["small", "full"])
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu (+ cuda)")
    parser.add_argument("--lesions", type=int, default=64, help="training lesions")
    parser.add_argument("--infer", type=int, default=128, help="inference lesions")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(0)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    header = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    print(json.dumps(header))
    rows = []
    for device in devices:
        for name in args.configs:
            row = bench(name, device, args.lesions, args.infer, args.epochs)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"machine": header, "results": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
