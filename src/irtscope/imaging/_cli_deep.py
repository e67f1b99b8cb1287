"""``irtscope imaging train-deep``: train, validate and compare the lesion CNN with radiomics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("train-deep")(train_deep)


def train_deep(
    manifest: Annotated[Path, typer.Option(help="Lesion manifest (CSV or Parquet).")],
    out: Annotated[Path, typer.Option(help="Output folder (checkpoint, tables, section).")],
    features: Annotated[
        Path | None,
        typer.Option(help="features.parquet from `irtscope imaging extract` (enables comparison)."),
    ] = None,
    config: Annotated[
        str, typer.Option(help="Preset (small, full) or a YAML file (may say 'preset: small').")
    ] = "small",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    dev_cohort: Annotated[str, typer.Option(help="Development cohort name.")] = "DEV-SIM",
    seed: Annotated[int, typer.Option(help="Seed for folds, bootstrap and models.")] = 0,
    n_splits: Annotated[int, typer.Option(help="Patient-grouped CV folds.")] = 5,
    n_boot: Annotated[int, typer.Option(help="Bootstrap replicates for the CIs.")] = 1000,
    fusion: Annotated[
        bool, typer.Option(help="Also evaluate late fusion (deep + radiomics + clinical).")
    ] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Patch cache folder (default OUT/patch_cache).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch CPU threads (default: torch's own choice).")
    ] = None,
) -> None:
    """Train the 3D lesion CNN, validate it internally and externally, compare with radiomics."""
    import pandas as pd
    import torch

    from irtscope._console import info, progress_bar
    from irtscope.imaging._deep import seed_everything
    from irtscope.imaging._deep_report import (
        format_comparison,
        run_deep_study,
        write_deep_outputs,
    )
    from irtscope.imaging._manifest import load_manifest

    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    frame = load_manifest(manifest)
    feature_table = pd.read_parquet(features) if features is not None else None
    with progress_bar("lesion CNN") as progress:
        result = run_deep_study(
            frame,
            feature_table,
            config,
            dev_cohort=dev_cohort,
            device=device,
            random_state=seed,
            n_splits=n_splits,
            n_boot=n_boot,
            cache_dir=cache_dir if cache_dir is not None else out / "patch_cache",
            fusion=fusion,
            progress=progress,
        )
    paths = write_deep_outputs(result, out)
    info(format_comparison(result.comparison).to_markdown(index=False))
    info(
        f"final fit {result.timings['final_fit_s']:.1f} s "
        f"({result.timings['epoch_mean_s']:.2f} s/epoch); checkpoint {paths['checkpoint']}"
    )
    info(f"section: {paths['section']}")
