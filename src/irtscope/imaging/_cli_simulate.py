"""CLI command ``irtscope imaging simulate`` (registered by :mod:`irtscope.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to ``app``."""
    app.command("simulate")(simulate)


def simulate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output folder for the SIMULATED cohorts.")
    ],
    seed: Annotated[int, typer.Option("--seed", help="Master seed (same seed, same data).")] = 0,
    scale: Annotated[
        float,
        typer.Option("--scale", min=0.01, help="Multiply patient counts (0.3 = quick demo)."),
    ] = 1.0,
    crop_margin_mm: Annotated[
        float,
        typer.Option(
            "--crop-margin-mm", min=2.0, max=20.0, help="Context kept around lesions (mm)."
        ),
    ] = 12.0,
) -> None:
    """Write three SIMULATED cohorts (DEV-SIM, EXT1-SIM, EXT2-SIM): NIfTI CTs, lesion masks
    and a lesion manifest with PD labels, survival, PD-L1 and arm. No real patient data."""
    import pandas as pd

    from irtscope._console import info, progress_bar
    from irtscope.imaging._simulate import simulate_cohorts

    with progress_bar("simulating cohorts") as callback:
        manifest_path = simulate_cohorts(
            out, seed=seed, scale=scale, progress=callback, crop_margin_mm=crop_margin_mm
        )
    manifest = pd.read_csv(manifest_path)
    for cohort, rows in manifest.groupby("cohort", sort=False):
        patients = rows.drop_duplicates("patient_id")
        info(
            f"{cohort}: {len(patients)} patients, {len(rows)} lesions, "
            f"PD {rows['pd'].mean():.0%}, OS censored {1 - patients['os_event'].mean():.0%}, "
            f"PFS censored {1 - patients['pfs_event'].mean():.0%}"
        )
    info(f"SIMULATED data written; manifest: {manifest_path}")
