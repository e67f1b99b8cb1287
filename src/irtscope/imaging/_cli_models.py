"""``irtscope imaging evaluate`` and ``irtscope imaging demo`` (registered by the root CLI).

``evaluate`` validates the radiomics models of a manifest + features table (internal CV versus
external cohorts, harmonisation off and on) and writes the metrics CSV and HTML report.
``demo`` runs the whole imaging pipeline on a small, freshly simulated set:
simulate -> extract -> evaluate -> report, in a few minutes on 2 cores.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from irtscope._console import info, is_quiet, out_console, progress_bar


def _run_evaluation(
    manifest_path: Path,
    features_path: Path,
    out: Path,
    *,
    development: str,
    tasks: list[str],
    batch_column: str,
    n_splits: int,
    n_boot: int,
    n_estimators: int,
    tune: bool,
    seed: int,
    extra_sections: list[dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Any:
    import pandas as pd
    from rich.markup import escape

    from irtscope._errors import DataError
    from irtscope.imaging._imaging_report import internal_external_summary, write_imaging_report
    from irtscope.imaging._manifest import load_manifest
    from irtscope.imaging._validation import internal_external_table, match_features
    from irtscope.report import write_csv

    manifest = load_manifest(manifest_path, check_files=False)
    if not features_path.is_file():
        raise DataError(f"features table not found: {features_path}")
    features = pd.read_parquet(features_path)
    match = match_features(manifest, features)
    frame = match.frame
    unmatched = match.unmatched
    no_features = int((unmatched["problem"] == "no features").sum())
    not_in_manifest = int((unmatched["problem"] == "not in manifest").sum())
    if not unmatched.empty:
        out.mkdir(parents=True, exist_ok=True)
        unmatched_csv = write_csv(unmatched, out / "unmatched_lesions.csv", index=False)
        _warn(
            f"{no_features} manifest lesion(s) without features and {not_in_manifest} feature "
            f"row(s) without a manifest lesion are left out (e.g. "
            f"{unmatched['lesion_id'].iloc[0]!r}); listed in {unmatched_csv}"
        )
    else:  # a list left by an earlier run into the same folder would mislead
        (out / "unmatched_lesions.csv").unlink(missing_ok=True)
    # check the options before the progress bar starts, so a typo is one clean error line
    unknown = sorted(set(tasks) - {"pd", "os", "pfs"})
    if unknown:
        raise DataError(f"unknown task(s) {unknown}; choose from pd, os, pfs")
    cohorts = sorted(frame["cohort"].astype(str).unique())
    if development not in cohorts:
        raise DataError(f"development cohort {development!r} not found; cohorts: {cohorts}")
    with progress_bar("validating models") as progress:
        result = internal_external_table(
            frame,
            development=development,
            tasks=tasks,
            batch_column=batch_column,
            n_splits=n_splits,
            n_boot=n_boot,
            n_estimators=n_estimators,
            tune=tune,
            random_state=seed,
            progress=progress,
        )
    trials = out.parent / "trials" / "report.html"
    files = write_imaging_report(
        result,
        out,
        extra_sections=extra_sections,
        provenance={
            "manifest": str(manifest_path),
            "features": str(features_path),
            "lesions in manifest": len(manifest),
            "lesions without features (excluded)": no_features,
            "feature rows without a manifest lesion (excluded)": not_in_manifest,
            **(provenance or {}),
        },
        trials_report="../trials/report.html" if trials.is_file() else None,
    )
    for key in ("feature columns dropped", "infinite values (treated as missing)"):
        if key in result.settings:
            listed = files.html.parent / "excluded_features.csv"
            _warn(f"{key}: {result.settings[key]} (listed in {listed})")
    label = "SIMULATED data: " if result.simulated else ""
    summary = internal_external_summary(result.table)  # as computed, not the quoted CSV
    info(f"{label}internal vs external validation")
    # cohort names and paths come from the user: print them verbatim, never as Rich markup
    if not is_quiet():  # a wide table: never wrap its rows at the terminal width
        table_text = summary.drop(columns=["data"], errors="ignore").to_string(index=False)
        out_console.print(escape(table_text), soft_wrap=True)
    info(escape(f"metrics -> {files.metrics_csv}\nreport  -> {files.html}"))
    return files


def _warn(message: str) -> None:
    """One warning line on stderr, shown even with ``--quiet`` (it changes what was computed).

    Lesion ids and paths come from the user: printed verbatim, never as Rich markup.
    """
    from rich.markup import escape

    from irtscope._console import err_console

    err_console.print("[yellow]warning:[/] " + escape(message), highlight=False, soft_wrap=True)


def evaluate(
    manifest: Annotated[Path, typer.Option(help="Lesion manifest (CSV or Parquet).")],
    features: Annotated[Path, typer.Option(help="features.parquet from `imaging extract`.")],
    out: Annotated[Path, typer.Option(help="Output folder (metrics, report.html).")] = Path(
        "build/imaging/evaluate"
    ),
    development: Annotated[str, typer.Option(help="Development cohort.")] = "DEV-SIM",
    tasks: Annotated[
        str, typer.Option(help="Comma-separated tasks: pd (per-lesion PD), os, pfs.")
    ] = "pd,os,pfs",
    batch_column: Annotated[
        str, typer.Option(help="ComBat batch column (cohort, or a scanner column).")
    ] = "cohort",
    n_splits: Annotated[int, typer.Option(min=2, help="Outer CV folds (by patient).")] = 5,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap replicates for CIs.")] = 1000,
    n_estimators: Annotated[int, typer.Option(min=10, help="Trees per forest.")] = 200,
    tune: Annotated[bool, typer.Option(help="Nested patient-grouped tuning.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for folds, forests and bootstraps.")] = 0,
) -> None:
    """Internal CV versus external validation of radiomics models, ComBat off and on."""
    _run_evaluation(
        manifest,
        features,
        out,
        development=development,
        tasks=[t.strip() for t in tasks.split(",") if t.strip()],
        batch_column=batch_column,
        n_splits=n_splits,
        n_boot=n_boot,
        n_estimators=n_estimators,
        tune=tune,
        seed=seed,
    )


def _deep_sections(manifest: Path, features: Path, out: Path, seed: int) -> list[dict[str, Any]]:
    """The deep-learning section of the demo report.

    The deep-learning module may provide ``irtscope.imaging._deep_report.demo_section(
    manifest_path, features_path, out_dir, seed) -> dict | None`` returning one report section
    (``title``, ``html`` as ``markupsafe.Markup``, optional ``figures``), see
    :func:`irtscope.imaging._imaging_report.write_imaging_report`. Until it exists the demo
    report has the radiomics sections only.
    """
    try:
        from irtscope.imaging._deep_report import demo_section  # type: ignore[attr-defined]
    except ImportError:
        return []
    section = demo_section(manifest, features, out / "deep", seed)
    return [section] if section else []


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("build/demo/imaging"),
    scale: Annotated[
        float, typer.Option(min=0.05, help="Simulated cohort size (1.0 = trial-sized).")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Simulation and model seed.")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Extraction worker processes.")] = 2,
    n_boot: Annotated[int, typer.Option(min=10, help="Bootstrap replicates.")] = 300,
    n_estimators: Annotated[int, typer.Option(min=10, help="Trees per forest.")] = 60,
    deep: Annotated[bool, typer.Option(help="Add the deep-learning section if available.")] = True,
) -> None:
    """Simulate small cohorts, extract radiomics, validate the models, write the report.

    Everything this command shows is computed on SIMULATED data.
    """
    from irtscope.imaging._extract import extract_features
    from irtscope.imaging._manifest import load_manifest
    from irtscope.imaging._simulate import simulate_cohorts

    started = time.perf_counter()
    timings: dict[str, str] = {}
    with progress_bar("simulating cohorts (SIMULATED)") as progress:
        manifest_path = simulate_cohorts(out / "data", seed=seed, scale=scale, progress=progress)
    timings["simulate"] = f"{time.perf_counter() - started:.0f} s"
    step = time.perf_counter()
    manifest = load_manifest(manifest_path)
    with progress_bar("radiomics", total=len(manifest)) as progress:
        extraction = extract_features(
            manifest, "lung-ct", n_workers=workers, cache_dir=out / "cache", progress=progress
        )
    features_path = extraction.write(out / "features")
    timings["extract"] = f"{time.perf_counter() - step:.0f} s"
    info(f"{len(extraction.features)} lesions extracted, {len(extraction.failures)} failed")
    step = time.perf_counter()
    sections = _deep_sections(manifest_path, features_path, out, seed) if deep else []
    if sections:
        timings["deep"] = f"{time.perf_counter() - step:.0f} s"
    step = time.perf_counter()
    _run_evaluation(
        manifest_path,
        features_path,
        out,
        development="DEV-SIM",
        tasks=["pd", "os", "pfs"],
        batch_column="cohort",
        n_splits=5,
        n_boot=n_boot,
        n_estimators=n_estimators,
        tune=True,
        seed=seed,
        extra_sections=sections,
        provenance={
            "simulation": f"simulate_cohorts(seed={seed}, scale={scale})",
            "extraction failures": len(extraction.failures),
            "timings (before evaluation)": ", ".join(f"{k} {v}" for k, v in timings.items()),
        },
    )
    info(f"imaging demo finished in {time.perf_counter() - started:.0f} s (SIMULATED data)")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``demo`` to the ``imaging`` sub-app."""
    app.command("evaluate")(evaluate)
    app.command("demo")(demo)
