"""Benchmark radiomics extraction: lesions/s of both engines side by side (pyradiomics, MIRP).

The cohort is the two shared lung CTs (``../shared/data/imaging/pyradiomics_lung``) repeated
``--lesions`` times under distinct lesion ids (replicas, so every task does the full work).
For each engine, with the same parameter YAML (``engine`` switched): 1 worker in process (cold
cache), 2 worker processes on an already running local Dask cluster (``--scheduler``, start-up
excluded), and a warm-cache rerun. Ratios are against pyradiomics with 1 worker, measured in
the same process on the same machine.

    python benchmarks/extract.py --lesions 8 --params lung-ct
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from irtscope.imaging import extract_features, load_params


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
    parser.add_argument("--lesions", type=int, default=8)
    parser.add_argument("--params", default="lung-ct")
    parser.add_argument("--engines", default="pyradiomics,mirp")
    args = parser.parse_args()
    manifest = _manifest(args.lesions)
    n = len(manifest)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    base = load_params(args.params)
    from distributed import LocalCluster

    rows = []
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    ) as cluster:
        for engine in engines:
            params = base.model_copy(update={"engine": engine})
            with tempfile.TemporaryDirectory() as cache:
                t1, r1 = _timed(manifest=manifest, params=params, cache_dir=cache)
                warm, r3 = _timed(manifest=manifest, params=params, cache_dir=cache)
            t2, r2 = _timed(manifest=manifest, params=params, scheduler=cluster.scheduler_address)
            for result in (r1, r2):
                assert result.failures.empty, result.failures  # type: ignore[attr-defined]
                assert len(result.features) == n  # type: ignore[attr-defined]
            assert r3.n_cached == n  # type: ignore[attr-defined]
            n_features = r1.features.shape[1] - 3  # type: ignore[attr-defined]
            rows.append((engine, n_features, t1, t2, warm))

    print(
        f"lesions: {n} (replicas of the 2 shared lung CTs), params: {args.params}, "
        f"cpus: {os.cpu_count()}"
    )
    baseline = n / rows[0][2]
    print(
        f"{'engine':<12} {'features':>8} {'1 worker':>17} {'2 workers':>17} "
        f"{'warm cache':>14} {'ratio (1 w)':>12}"
    )
    for engine, n_features, t1, t2, warm in rows:
        print(
            f"{engine:<12} {n_features:>8d} {n / t1:>8.2f} lesions/s {n / t2:>8.2f} lesions/s "
            f"{n / warm:>7.0f} les/s {n / t1 / baseline:>11.2f}x"
        )
    print(f"ratio: lesions/s against {rows[0][0]} with 1 worker (same process, same machine)")


if __name__ == "__main__":
    main()
