"""Screening + classification throughput and peak memory on renumbered real records.

Cycles the shared ClinicalTrials.gov records (``../shared/data/ctgov``) up to N studies, giving
each a new NCT id (``NCT9xxxxxxx``) so duplicate handling does not shortcut anything, then
times ``screen_studies`` and ``classify_studies`` (every record is classified, not only the
included ones) on one thread: once each on its own, and once as the CLI pipeline runs them
(screen a batch, then classify the same dicts, which reuses the text already scanned). Both
wall-clock and CPU time are reported: on a shared machine wall time moves with the load.
For scale, the same process also times plain ``json.loads``
and ``orjson.loads`` of the same records (the floor any reader of raw JSON pays). Prints
records/s, the ratio to the JSON baselines, and peak RSS. The load average is printed too:
on a shared machine the absolute figures move with it, the ratios much less.

Not run by pytest. Usage::

    python benchmarks/classify.py             # 100,000 records
    python benchmarks/classify.py --n 5000    # quick
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    env = os.environ.get("IRTSCOPE_SHARED_DATA")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / "ctgov"


def load_base() -> list[dict]:
    records: list[dict] = []
    for path in sorted(_shared_dir().glob("*.json.gz")):
        with gzip.open(path) as handle:
            records.extend(orjson.loads(handle.read()))
    records = [r for r in records if (r.get("protocolSection") or {}).get("identificationModule")]
    if not records:
        raise SystemExit(f"no shared records under {_shared_dir()}")
    return records


def renumbered(base: list[dict], n: int) -> Iterator[dict]:
    """``n`` studies cycling ``base`` with fresh NCT ids (shallow copies; nothing is mutated)."""
    for i in range(n):
        record = base[i % len(base)]
        ps = dict(record["protocolSection"])
        ident = dict(ps["identificationModule"])
        ident["nctId"] = f"NCT9{i:07d}"
        ident.pop("nctIdAliases", None)
        # distinct titles and org ids, or every cycle would be "duplicate content"
        ident["officialTitle"] = f"{ident.get('officialTitle') or ''} [{i}]"
        ident["orgStudyIdInfo"] = {"id": f"BENCH-{i}"}
        ps["identificationModule"] = ident
        yield {**record, "protocolSection": ps}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="number of records")
    parser.add_argument("--protocol", default="nsclc-irt")
    parser.add_argument("--batch", type=int, default=1000, help="pipeline batch size")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from irtscope.trials import classify_studies, load_protocol, screen_studies

    base = load_base()
    blobs = [orjson.dumps(r) for r in base]
    protocol = load_protocol(args.protocol)
    screen_studies(renumbered(base, 50), protocol)  # compile the scanner outside the timing
    rss_start = _peak_rss_mib()

    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(args.n):
        json.loads(blobs[i % len(blobs)])
    t_json, c_json = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(args.n):
        orjson.loads(blobs[i % len(blobs)])
    t_orjson, c_orjson = time.perf_counter() - wall, time.process_time() - cpu

    # 1) each step on its own (fresh dicts: nothing shared between the two passes)
    wall, cpu = time.perf_counter(), time.process_time()
    screening = screen_studies(renumbered(base, args.n), protocol)
    t_screen, c_screen = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    classification = classify_studies(renumbered(base, args.n), protocol)
    t_classify, c_classify = time.perf_counter() - wall, time.process_time() - cpu
    n_rows = len(classification)
    del classification

    # 2) the pipeline as the CLI runs it: screen a batch, then classify the same dicts
    wall, cpu = time.perf_counter(), time.process_time()
    source = renumbered(base, args.n)
    included = 0
    while batch := list(itertools.islice(source, args.batch)):
        frame = screen_studies(batch, protocol)
        included += int((frame["decision"] == "included").sum())
        classify_studies(batch, protocol)
    t_pipe, c_pipe = time.perf_counter() - wall, time.process_time() - cpu

    n = args.n
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"records: {n:,} (cycling {len(base):,} shared records); load average {load} "
        f"on {os.cpu_count()} cores"
    )
    print(f"{'step':<34} {'wall s':>8} {'rec/s':>8} {'CPU s':>8} {'rec/CPU-s':>10}")

    def line(name: str, wall_s: float, cpu_s: float) -> None:
        print(f"{name:<34} {wall_s:8.1f} {n / wall_s:8,.0f} {cpu_s:8.1f} {n / cpu_s:10,.0f}")

    line("screen (all records)", t_screen, c_screen)
    line("classify (all records)", t_classify, c_classify)
    line("screen + classify, separate", t_screen + t_classify, c_screen + c_classify)
    line(f"screen + classify, batches of {args.batch:,}", t_pipe, c_pipe)
    line("json.loads (baseline)", t_json, c_json)
    line("orjson.loads (baseline)", t_orjson, c_orjson)
    print(
        f"included: {(screening['decision'] == 'included').sum():,} "
        f"(pipeline: {included:,}); long-form rows: {n_rows:,}"
    )
    print(
        f"screen + classify (batched) = {c_pipe / c_json:.1f}x the CPU time of json.loads, "
        f"{c_pipe / c_orjson:.1f}x orjson.loads; target >= 3,000 records/s on one core"
    )
    print(
        f"peak RSS: {_peak_rss_mib():,.0f} MiB (after loading the base records: "
        f"{rss_start:,.0f} MiB)"
    )


if __name__ == "__main__":
    main()
