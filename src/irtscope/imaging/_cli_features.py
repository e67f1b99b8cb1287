"""CLI: ``irtscope imaging ibsi-check`` and ``irtscope imaging extract``.

Thin wrappers: parse options, call :func:`~irtscope.imaging.ibsi_check` or
:func:`~irtscope.imaging.extract_features`, render the result. Heavy imports (pyradiomics,
SimpleITK, Dask) happen inside the commands so ``irtscope --help`` stays fast.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from irtscope._console import info, is_quiet, out_console, progress_bar
from irtscope._errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd


class _Phantom(StrEnum):
    ct = "ct"
    digital = "digital"


class _Source(StrEnum):
    auto = "auto"
    nifti = "nifti"
    dicom = "dicom"


class _Engine(StrEnum):
    pyradiomics = "pyradiomics"
    mirp = "mirp"


class _Show(StrEnum):
    all = "all"
    computed = "computed"
    fail = "fail"


def _shared_imaging(data_dir: Path | None) -> Path:
    """``--data-dir``, else ``$IRTSCOPE_SHARED_DATA/imaging``, else ``../shared/data/imaging``."""
    if data_dir is None:
        root = os.environ.get("IRTSCOPE_SHARED_DATA")
        base = Path(root) if root else Path.cwd().parent / "shared" / "data"
        data_dir = base / "imaging"
    if not data_dir.is_dir():
        raise DataError(
            f"IBSI data folder {str(data_dir)!r} not found; pass --data-dir (the folder holding "
            "ibsi1_ct_phantom/ and ibsi1_reference_values/)"
        )
    return data_dir


def ibsi_check_command(
    config: Annotated[str, typer.Option("--config", "-c", help="IBSI CT configuration A-E.")] = "A",
    phantom: Annotated[
        _Phantom, typer.Option(help="ct (IBSI CT phantom) or digital (5x4x4 digital phantom).")
    ] = _Phantom.ct,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder with ibsi1_* phantoms and reference values (../shared/data/imaging)."
        ),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Reference table (value;tolerance;tag) to use instead.")
    ] = None,
    params: Annotated[
        str | None, typer.Option(help="Preset name or YAML to use instead of the config's preset.")
    ] = None,
    source: Annotated[
        _Source, typer.Option(help="Phantom copy to read: NIfTI or DICOM+RTSTRUCT.")
    ] = _Source.auto,
    show: Annotated[_Show, typer.Option(help="Rows to print: all, computed or fail.")] = _Show.all,
    out: Annotated[
        Path | None,
        typer.Option(help="Also write the table to this CSV (with --all: the output folder)."),
    ] = None,
    engine: Annotated[
        _Engine | None,
        typer.Option(help="Extraction engine (default pyradiomics; with --all: both)."),
    ] = None,
    run_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Every configuration (digital, A-E) with every engine, the conformance table "
            "(CSV + Markdown) and the cross-engine agreement on the shared lung CTs.",
        ),
    ] = False,
    agreement: Annotated[
        bool, typer.Option(help="With --all: also compare the engines on the lung CTs.")
    ] = True,
    workers: Annotated[
        int, typer.Option(min=1, help="With --all: checks run side by side in N processes.")
    ] = 2,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="With --all: Parquet cache of the lung-CT extractions (OUT/cache)."),
    ] = None,
) -> None:
    """Run an IBSI phantom through a configuration and compare with the reference values."""
    from irtscope.imaging._ibsi import IBSI_CONFIGS, ibsi_check, ibsi_pass_share, reference_table

    if run_all:
        _ibsi_all(data_dir, out, engine, agreement, workers, cache_dir)
        return
    key = "digital" if phantom is _Phantom.digital else config.upper()
    if key not in IBSI_CONFIGS:
        raise ConfigError(f"unknown IBSI configuration {config!r}; use A, B, C, D or E")
    folder = _shared_imaging(data_dir)
    phantom_dir = folder / ("ibsi1_digital_phantom" if key == "digital" else "ibsi1_ct_phantom")
    if reference is None:
        reference = reference_table(key, folder)
    table = ibsi_check(
        key,
        phantom_dir,
        reference,
        params=params,
        source=source.value,
        engine=engine.value if engine is not None else None,
    )
    if out is not None:
        from irtscope.report import write_csv

        write_csv(table, out, index=False)
    _print_ibsi(table, key, show)
    counts = table["status"].value_counts()
    n_pass, n_fail = int(counts.get("pass", 0)), int(counts.get("fail", 0))
    info(
        f"IBSI {key}: {n_pass}/{n_pass + n_fail} computed features pass "
        f"({100 * ibsi_pass_share(table):.1f} %); {int(counts.get('not computed', 0))} not computed"
        + f" (engine {engine.value if engine is not None else 'pyradiomics'})"
    )


def _ibsi_all(
    data_dir: Path | None,
    out: Path | None,
    engine: _Engine | None,
    agreement: bool,
    workers: int = 2,
    cache_dir: Path | None = None,
) -> None:
    """``ibsi-check --all``: conformance of every configuration and engine, then agreement."""
    from irtscope.imaging._ibsi import ENGINES
    from irtscope.imaging._ibsi_conformance import (
        agreement_summary,
        engine_agreement,
        ibsi_conformance,
    )

    folder = _shared_imaging(data_dir)
    out_dir = out or Path("build") / "ibsi"
    engines = [engine.value] if engine is not None else list(ENGINES)
    result = ibsi_conformance(folder, engines=engines, n_workers=workers)
    if agreement and len(engines) > 1:
        from dataclasses import replace

        manifest = lung_manifest(folder)
        cache = cache_dir or out_dir / "cache"
        result = replace(result, agreement=engine_agreement(manifest, "lung-ct", cache_dir=cache))
    files = result.write(out_dir)
    _print_frame(result.summary, "IBSI 1 conformance (pass share of computed; coverage of tags)")
    if result.agreement is not None:
        _print_frame(
            agreement_summary(result.agreement),
            "pyradiomics vs MIRP on the shared lung CTs (lung-ct preset), relative differences",
        )
    info(f"conformance tables -> {files['summary'].parent}")


def lung_manifest(imaging_dir: Path) -> pd.DataFrame:
    """Manifest of the two shared lung CTs (``pyradiomics_lung/lung{1,2}_image.nrrd``)."""
    import pandas as pd

    lung = imaging_dir / "pyradiomics_lung"
    rows = []
    for i in (1, 2):
        image, mask = lung / f"lung{i}_image.nrrd", lung / f"lung{i}_label.nrrd"
        if not (image.is_file() and mask.is_file()):
            raise DataError(f"shared lung CT {str(image)!r} or its label map is missing")
        rows.append(
            {
                "lesion_id": f"lung{i}",
                "patient_id": f"lung{i}",
                "cohort": "pyradiomics_lung",
                "image_path": str(image),
                "mask_path": str(mask),
            }
        )
    return pd.DataFrame(rows)


def _print_frame(frame: pd.DataFrame, title: str) -> None:
    if is_quiet():
        return
    from rich.table import Table

    rich_table = Table(title=title)
    for column in frame.columns:
        rich_table.add_column(str(column), no_wrap=True)
    for row in frame.itertuples(index=False):
        rich_table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    out_console.print(rich_table)


def _print_ibsi(table: pd.DataFrame, key: str, show: _Show) -> None:
    if is_quiet():
        return
    from rich.table import Table

    rows = table
    if show is _Show.computed:
        rows = table[table["status"].isin(["pass", "fail"])]
    elif show is _Show.fail:
        rows = table[table["status"] == "fail"]
    styles = {"pass": "green", "fail": "bold red", "not computed": "dim", "no reference": "dim"}
    rich_table = Table(title=f"IBSI 1 check, configuration {key}")
    rich_table.add_column("tag", no_wrap=True)
    for column in ("ours", "reference", "tolerance", "status"):
        rich_table.add_column(column, no_wrap=True)
    rich_table.add_column("note", overflow="fold")
    for row in rows.itertuples(index=False):
        ours = "" if row.ours is None or row.ours != row.ours else f"{row.ours:.4g}"
        rich_table.add_row(
            row.tag,
            ours,
            f"{row.reference:.4g}",
            f"{row.tolerance:.3g}",
            f"[{styles[row.status]}]{row.status}[/]",
            row.note if row.status != "pass" else "",
        )
    out_console.print(rich_table)


def extract_command(
    manifest: Annotated[Path, typer.Option(help="Lesion manifest (CSV or Parquet).")],
    out: Annotated[Path, typer.Option(help="Output folder (features.parquet, failures.csv).")],
    params: Annotated[
        str, typer.Option(help="Preset (lung-ct, ibsi-a..ibsi-e) or pyradiomics YAML.")
    ] = "lung-ct",
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 = in process).")] = 1,
    scheduler: Annotated[
        str | None, typer.Option(help="Existing Dask scheduler, e.g. tcp://host:8786.")
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Parquet cache folder (default OUT/cache).")
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute everything.")] = False,
    engine: Annotated[
        _Engine | None,
        typer.Option(help="Override the YAML's engine: pyradiomics or mirp (full IBSI 1 set)."),
    ] = None,
) -> None:
    """Extract radiomics features for every lesion of a manifest (cached, resumable)."""
    from rich.markup import escape

    from irtscope.imaging._extract import extract_features
    from irtscope.imaging._manifest import load_manifest
    from irtscope.imaging._params import load_params

    settings = load_params(params)  # fail on a bad YAML before reading any image
    if engine is not None:
        settings = settings.model_copy(update={"engine": engine.value})
    # A missing image or mask is one failed lesion (listed in failures.csv), not a reason to
    # drop the whole cohort: the manifest's structure is still checked here, files per lesion.
    table = load_manifest(manifest, check_files=False)
    cache = None if no_cache else (cache_dir or out / "cache")
    with progress_bar("radiomics", total=len(table)) as progress:
        result = extract_features(
            table,
            settings,
            n_workers=workers,
            scheduler=scheduler,
            cache_dir=cache,
            progress=progress,
        )
    path = result.write(out)
    info(
        f"{len(result.features)} lesions extracted ({result.n_cached} from cache, "
        f"{result.n_computed} computed), {len(result.failures)} failed -> {path}"
    )
    if not is_quiet():  # one line per failed lesion, printed verbatim (never wrapped or styled)
        for row in result.failures.itertuples(index=False):
            out_console.print(f"  failed: {escape(str(row.error))}", soft_wrap=True)
    if result.features.empty:
        raise DataError(
            f"no lesion of {str(manifest)!r} could be extracted ({len(result.failures)} failed; "
            f"see {str(out / 'failures.csv')!r})"
        )


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("ibsi-check")(ibsi_check_command)
    app.command("extract")(extract_command)
