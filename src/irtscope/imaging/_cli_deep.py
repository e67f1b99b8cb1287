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
    n_splits: Annotated[int, typer.Option(min=2, help="Patient-grouped CV folds.")] = 5,
    n_boot: Annotated[
        int, typer.Option(min=10, help="Bootstrap replicates for the CIs.")
    ] = 1000,
    fusion: Annotated[
        bool, typer.Option(help="Also evaluate late fusion (deep + radiomics + clinical).")
    ] = True,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Patch cache folder (default OUT/patch_cache).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="torch CPU threads (default: torch's own choice)."),
    ] = None,
) -> None:
    """Train the 3D lesion CNN, validate it internally and externally, compare with radiomics."""
    import pandas as pd
    import torch
    from rich.markup import escape

    from irtscope._console import info, is_quiet, out_console, progress_bar
    from irtscope._errors import DataError
    from irtscope.imaging._deep import load_deep_config, seed_everything
    from irtscope.imaging._deep_report import (
        format_comparison,
        run_deep_study,
        write_deep_outputs,
    )
    from irtscope.imaging._manifest import load_manifest

    if threads is not None:
        torch.set_num_threads(threads)
    seed_everything(seed)
    settings = load_deep_config(config)  # a bad preset/YAML fails before any image is read
    frame = load_manifest(manifest)
    feature_table = None
    if features is not None:
        if not features.is_file():
            raise DataError(
                f"features table {str(features)!r} not found; run `irtscope imaging extract` "
                "first or leave out --features"
            )
        try:
            feature_table = pd.read_parquet(features)
        except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
            raise DataError(f"features table {str(features)!r} could not be read: {exc}") from exc
    with progress_bar("lesion CNN") as progress:
        result = run_deep_study(
            frame,
            feature_table,
            settings,
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
    if result.simulated:
        info("SIMULATED data: deep vs radiomics (per-lesion PD AUC)")
    # cohort names and paths come from the user: print them verbatim, never as Rich markup
    if not is_quiet():  # a wide table: never wrap its rows at the terminal width
        out_console.print(
            escape(format_comparison(result.comparison).to_markdown(index=False)), soft_wrap=True
        )
    info(
        escape(
            f"final fit {result.timings['final_fit_s']:.1f} s "
            f"({result.timings['epoch_mean_s']:.2f} s/epoch); checkpoint {paths['checkpoint']}"
        )
    )
    info(escape(f"section: {paths['section']}"))
