"""Benchmark radiomics extraction: lesions/s with 1 and 2 workers, and a warm-cache rerun.

The cohort is the two shared lung CTs (``../shared/data/imaging/pyradiomics_lung``) repeated
``--lesions`` times under distinct lesion ids (replicas, so every task does the full work).
Runs with 1 worker (in process) and 2 worker processes (local Dask cluster, start-up included)
have no cache; then one cold run fills a cache and a rerun reads it back.

    python benchmarks/extract.py --lesions 16 --params lung-ct
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from irtscope.imaging import extract_features


def _shared_imaging() -> Path:
    root = os.environ.get("IRTSCOPE_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return base / "imaging"


def _manifest(n: int) -> pd.DataFrame:
    lung = _shared_imaging() / "pyradiomics_lung"
    if not lung.is_dir():
        raise SystemExit(f"shared lung CTs not found at {lung}; set IRTSCOPE_SHARED_DATA")
    rows = []
    for k in range(n):
        i = 1 + k % 2
        rows.append(
            {
                "lesion_id": f"L{k:03d}",
                "patient_id": f"P{k:03d}",
                "cohort": "bench",
                "image_path": str(lung / f"lung{i}_image.nrrd"),
                "mask_path": str(lung / f"lung{i}_label.nrrd"),
            }
        )
    return pd.DataFrame(rows)


def _timed(**kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = extract_features(**kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lesions", type=int, default=16)
    parser.add_argument("--params", default="lung-ct")
    args = parser.parse_args()
    manifest = _manifest(args.lesions)
    n = len(manifest)

    t1, r1 = _timed(manifest=manifest, params=args.params, n_workers=1)
    t2, r2 = _timed(manifest=manifest, params=args.params, n_workers=2)
    for result in (r1, r2):
        assert result.failures.empty and len(result.features) == n  # type: ignore[attr-defined]
    from distributed import LocalCluster

    # the same job on an already running 2-process cluster (--scheduler tcp://...)
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:
        t2w, r2w = _timed(
            manifest=manifest, params=args.params, scheduler=cluster.scheduler_address
        )
    assert r2w.failures.empty and len(r2w.features) == n  # type: ignore[attr-defined]
    with tempfile.TemporaryDirectory() as cache:
        cold, _ = _timed(manifest=manifest, params=args.params, cache_dir=cache)
        warm, r3 = _timed(manifest=manifest, params=args.params, cache_dir=cache)
    assert r3.n_cached == n  # type: ignore[attr-defined]

    print(
        f"lesions: {n} (replicas of the 2 shared lung CTs), params: {args.params}, "
        f"cpus: {os.cpu_count()}"
    )
    print(f"1 worker : {t1:7.2f} s  {n / t1:6.2f} lesions/s")
    print(f"2 workers: {t2:7.2f} s  {n / t2:6.2f} lesions/s  (Dask start-up included)")
    print(f"2 workers: {t2w:7.2f} s  {n / t2w:6.2f} lesions/s  (running cluster, --scheduler)")
    print(f"speed-up 2 vs 1 workers: {t1 / t2:.2f}x with start-up, {t1 / t2w:.2f}x without")
    print(
        f"cache: cold {cold:.2f} s, warm rerun {warm:.3f} s "
        f"({cold / warm:.0f}x faster, {n / warm:.0f} lesions/s)"
    )


if __name__ == "__main__":
    main()
