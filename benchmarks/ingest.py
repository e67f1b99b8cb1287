"""Import throughput and peak memory of ``irtscope trials import``.

Builds JSONL inputs of N records by cycling the shared records (``../shared/data/ctgov``) and
renumbering their NCT ids (``NCT9xxxxxxx``, so every record is a new study), then imports each
into a fresh DuckDB file in a fresh process (so peak RSS belongs to that size alone) on one
thread. Prints records/s (wall clock and CPU time: the machine may be shared, and CPU time is
what a loaded machine does not inflate), the per-record rate without the fixed cost every
file import pays (``marginal``, ``per-file s``), peak RSS, and the ratio to plain
``orjson.loads`` over the same bytes (the floor any JSON importer pays here). Target: 5,000
records per second on one core, with peak RSS that does not grow with the input.

Not run by pytest. Usage::

    python benchmarks/ingest.py                 # 2,000 and 100,000 records
    python benchmarks/ingest.py --sizes 2000    # quick
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("IRTSCOPE_SHARED_DATA")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / "ctgov"


def make_input(n: int, out: Path) -> int:
    """Write ``n`` renumbered shared records as JSONL; returns the byte count."""
    records: list[dict] = []
    for path in sorted(_shared_dir().glob("*.json.gz")):
        with gzip.open(path) as handle:
            records.extend(orjson.loads(handle.read()))
    if not records:
        raise SystemExit(f"no shared records under {_shared_dir()}")
    size = 0
    with out.open("wb") as handle:
        for i in range(n):
            record = records[i % len(records)]
            ps = dict(record["protocolSection"])
            ident = dict(ps["identificationModule"])
            ident["nctId"] = f"NCT9{i:07d}"
            ident.pop("nctIdAliases", None)
            ps["identificationModule"] = ident
            line = orjson.dumps({**record, "protocolSection": ps}) + b"\n"
            handle.write(line)
            size += len(line)
    return size


def _orjson_seconds(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds of plain orjson.loads of every line (reading excluded)."""
    wall = cpu = 0.0
    with path.open("rb", buffering=1 << 20) as handle:
        for line in handle:
            start, start_cpu = time.perf_counter(), time.process_time()
            orjson.loads(line)
            cpu += time.process_time() - start_cpu
            wall += time.perf_counter() - start
    return wall, cpu


def run_one(path: Path, db: Path) -> dict:
    """Child process: import ``path`` into ``db`` on one thread; report time and peak RSS.

    A 20-record import into a throwaway store runs first: the libraries the import loads
    lazily (DuckDB, Arrow, pandas through Arrow) cost ~0.5 s once per process, which is
    start-up, not throughput. It is timed and reported apart (``startup_s``). A second
    20-record import into another new store then measures what every file import costs
    whatever its size (``per_file_cpu_s``: snapshot bookkeeping and the final checkpoint
    of 14 tables), so the per-record rate can be told apart from it (``marginal``).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    from irtscope.trials import Store, import_paths

    warm = db.with_name(db.stem + "_warmup.jsonl")
    with path.open("rb") as source, warm.open("wb") as target:
        target.writelines(line for _, line in zip(range(20), source, strict=False))
    with Store(db.with_name(db.stem + "_warmup.duckdb")) as store:
        import_paths(store, [warm])
    startup = time.perf_counter() - start
    with Store(db.with_name(db.stem + "_per_file.duckdb")) as store:
        store.con.execute("SET threads = 1")
        start_cpu = time.process_time()
        small = import_paths(store, [warm]).entries_read
        per_file = time.process_time() - start_cpu

    with Store(db) as store:
        store.con.execute("SET threads = 1")
        start, start_cpu = time.perf_counter(), time.process_time()
        report = import_paths(store, [path])
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        unique = store.study_count()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "records": report.entries_read,
        "new_studies": report.new_studies,
        "unique": unique,
        "failures": len(report.failures),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "peak_rss_mib": peak_kib / 1024,
        "startup_s": startup,
        "per_file_cpu_s": per_file,
        "marginal_rate": (report.entries_read - small) / max(cpu_seconds - per_file, 1e-9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 100_000])
    parser.add_argument("--keep", action="store_true", help="keep the temporary files")
    parser.add_argument("--child", nargs=2, metavar=("INPUT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(Path(args.child[0]), Path(args.child[1]))))
        return

    workdir = Path(tempfile.mkdtemp(prefix="irtscope-bench-"))
    print(
        f"{'records':>9} {'MB':>7} {'import s':>9} {'rec/s':>8} {'cpu s':>7} {'rec/cpu-s':>9} "
        f"{'marginal':>9} {'orjson s':>9} {'ratio':>6} {'cpu ratio':>9} {'peak RSS MiB':>13} "
        f"{'per-file s':>10} {'startup s':>9}"
    )
    for n in args.sizes:
        data = workdir / f"records_{n}.jsonl"
        size = make_input(n, data)
        baseline, baseline_cpu = _orjson_seconds(data)
        db = workdir / f"bench_{n}.duckdb"
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(data), str(db)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
        assert result["new_studies"] == n and result["failures"] == 0, result
        rate = result["records"] / result["seconds"]
        cpu_rate = result["records"] / result["cpu_seconds"]
        print(
            f"{n:>9,} {size / 1e6:>7.0f} {result['seconds']:>9.1f} {rate:>8,.0f} "
            f"{result['cpu_seconds']:>7.1f} {cpu_rate:>9,.0f} {result['marginal_rate']:>9,.0f} "
            f"{baseline:>9.1f} "
            f"{result['seconds'] / baseline:>6.2f} {result['cpu_seconds'] / baseline_cpu:>9.2f} "
            f"{result['peak_rss_mib']:>13,.0f} {result['per_file_cpu_s']:>10.3f} "
            f"{result['startup_s']:>9.2f}",
            flush=True,
        )
        if not args.keep:
            data.unlink()
            for path in workdir.glob(f"bench_{n}*"):
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
    if not args.keep:
        workdir.rmdir()


if __name__ == "__main__":
    main()
