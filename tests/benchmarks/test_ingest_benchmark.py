"""The ingest benchmark still runs end to end (tiny size; its numbers are not asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def test_ingest_benchmark_prints_a_row_per_size(ctgov_dir: Path) -> None:
    script = REPO_ROOT / "benchmarks" / "ingest.py"
    env = {**os.environ, "IRTSCOPE_SHARED_DATA": str(ctgov_dir.parent)}
    done = subprocess.run(
        [sys.executable, str(script), "--sizes", "60"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    header, row = done.stdout.strip().splitlines()[-2:]
    assert "rec/cpu-s" in header and "marginal" in header and "peak RSS MiB" in header
    fields = row.split()
    assert fields[0] == "60" and len(fields) == 13  # one value under each column
