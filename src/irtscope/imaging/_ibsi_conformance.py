"""IBSI 1 conformance of every configuration and engine, and cross-engine agreement on real CT.

``ibsi-check --all`` runs :func:`~irtscope.imaging.ibsi_check` for the digital phantom and the
five CT configurations A-E with each engine and condenses the tables into one conformance
table (:func:`conformance_tables`): per configuration and engine the number of reference tags
(tags with a consensus value), how many the engine computed, how many of those are within
tolerance, the pass share (of computed tags) and the coverage (of reference tags), plus an
"any engine" row: the tags at least one engine computes. The same counts per IBSI feature
family and the list of tags not computed come alongside.

:func:`engine_agreement` answers the practical question behind two engines: on real lesions,
where do pyradiomics and MIRP disagree for a feature both compute, and by how much? It extracts
the same manifest with both engines through the normal extraction path (cache, Dask,
failures) and lines the pyradiomics columns up with MIRP's IBSI tags through
``ibsi_feature_map.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from irtscope._errors import DataError
from irtscope.imaging._ibsi import (
    _TRANSFORMS,
    ENGINES,
    IBSI_CONFIGS,
    _run_name,
    ibsi_check,
    ibsi_feature_map,
    reference_table,
)
from irtscope.imaging._params import RadiomicsParams, load_params

__all__ = [
    "CONFIGS",
    "Conformance",
    "conformance_tables",
    "engine_agreement",
    "ibsi_conformance",
    "pyradiomics_to_ibsi",
]

#: Configurations ``--all`` runs, in report order.
CONFIGS = ("digital", "A", "B", "C", "D", "E")
#: IBSI 1 feature families (tag prefix -> name used in the tables).
FAMILIES = {
    "morph_": "morphology",
    "loc_": "local intensity",
    "stat_": "intensity statistics",
    "ih_": "intensity histogram",
    "ivh_": "intensity-volume histogram",
    "cm_": "GLCM",
    "rlm_": "GLRLM",
    "szm_": "GLSZM",
    "dzm_": "GLDZM",
    "ngt_": "NGTDM",
    "ngl_": "NGLDM",
}
_DIAGNOSTICS = "image/ROI diagnostics"


def _family(tag: str) -> str:
    for prefix, name in FAMILIES.items():
        if tag.startswith(prefix):
            return name
    return _DIAGNOSTICS


def _counts(frame: pd.DataFrame) -> dict[str, Any]:
    referenced = frame[frame["status"] != "no reference"]
    computed = referenced[referenced["status"].isin(["pass", "fail"])]
    passed = int((computed["status"] == "pass").sum())
    return {
        "reference_tags": len(referenced),
        "computed": len(computed),
        "in_tolerance": passed,
        "failed": len(computed) - passed,
        "pass_share": passed / len(computed) if len(computed) else math.nan,
        "coverage": len(computed) / len(referenced) if len(referenced) else math.nan,
    }


@dataclass(frozen=True)
class Conformance:
    """The condensed result of ``ibsi-check --all``.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per configuration and engine (plus ``any engine``): ``config``, ``engine``,
        ``reference_tags``, ``computed``, ``in_tolerance``, ``failed``, ``pass_share``,
        ``coverage``.
    families : pandas.DataFrame
        The same counts per IBSI feature family.
    not_computed : pandas.DataFrame
        ``config``, ``engine``, ``tag``, ``family``, ``note`` for every reference tag an engine
        did not compute.
    tables : dict
        ``(config, engine)`` -> the full :func:`ibsi_check` table.
    agreement : pandas.DataFrame, optional
        Cross-engine agreement on real CT (:func:`engine_agreement`), when it was run.
    """

    summary: pd.DataFrame
    families: pd.DataFrame
    not_computed: pd.DataFrame
    tables: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    agreement: pd.DataFrame | None = None

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the tables (CSV, XLSX, Markdown) and each check table (CSV) to ``out_dir``."""
        from irtscope.report import write_csv, write_table

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "summary": write_table(_rounded(self.summary), out, "ibsi_conformance").csv,
            "families": write_table(_rounded(self.families), out, "ibsi_families").csv,
            "not_computed": write_csv(self.not_computed, out / "ibsi_not_computed.csv"),
        }
        for (config, engine), table in self.tables.items():
            write_csv(table, out / f"ibsi_{config}_{engine}.csv", index=False)
        if self.agreement is not None:
            files["agreement"] = write_csv(
                self.agreement, out / "engine_agreement.csv", index=False
            )
            files["agreement_summary"] = write_table(
                _rounded(agreement_summary(self.agreement)), out, "engine_agreement_summary"
            ).csv
        return files


def _rounded(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind == "f":
            out[column] = out[column].round(4)
    return out


def conformance_tables(tables: Mapping[tuple[str, str], pd.DataFrame]) -> Conformance:
    """Condense ``(config, engine) -> ibsi_check table`` into the conformance tables."""
    summary, families, missing = [], [], []
    configs = list(dict.fromkeys(config for config, _ in tables))
    for config in configs:
        engines = [engine for (c, engine) in tables if c == config]
        for engine in engines:
            table = tables[(config, engine)].assign(family=lambda t: t["tag"].map(_family))
            summary.append({"config": config, "engine": engine, **_counts(table)})
            for family, part in table.groupby("family", sort=False):
                families.append(
                    {"config": config, "engine": engine, "family": family, **_counts(part)}
                )
            gaps = table[table["status"] == "not computed"]
            missing.extend(
                {
                    "config": config,
                    "engine": engine,
                    "tag": r.tag,
                    "family": r.family,
                    "note": r.note,
                }
                for r in gaps.itertuples(index=False)
            )
        if len(engines) > 1:
            summary.append(
                {
                    "config": config,
                    "engine": "any engine",
                    **_union_counts([tables[(config, e)] for e in engines]),
                }
            )
    return Conformance(
        summary=pd.DataFrame(summary),
        families=pd.DataFrame(families),
        not_computed=pd.DataFrame(missing, columns=["config", "engine", "tag", "family", "note"]),
        tables=dict(tables),
    )


def _union_counts(frames: Sequence[pd.DataFrame]) -> dict[str, Any]:
    """A tag counts as computed when any engine computed it, and as passing when any passed."""
    status = pd.concat([f.set_index("tag")["status"] for f in frames], axis=1)
    referenced = status[(status != "no reference").all(axis=1)]
    computed = referenced.isin(["pass", "fail"]).any(axis=1)
    passed = (referenced == "pass").any(axis=1)
    n_computed, n_passed = int(computed.sum()), int(passed.sum())
    return {
        "reference_tags": len(referenced),
        "computed": n_computed,
        "in_tolerance": n_passed,
        "failed": n_computed - n_passed,
        "pass_share": n_passed / n_computed if n_computed else math.nan,
        "coverage": n_computed / len(referenced) if len(referenced) else math.nan,
    }


def ibsi_conformance(
    data_dir: str | Path,
    *,
    engines: Iterable[str] = ENGINES,
    configs: Iterable[str] = CONFIGS,
    project_root: str | Path = ".",
    check: Callable[..., pd.DataFrame] = ibsi_check,
    n_workers: int = 1,
) -> Conformance:
    """Run every configuration with every engine and condense the results.

    Parameters
    ----------
    data_dir : str or Path
        Folder with ``ibsi1_ct_phantom/``, ``ibsi1_digital_phantom/`` and
        ``ibsi1_reference_values/`` (``../shared/data/imaging``).
    engines, configs : iterable of str
        Which engines and configurations to run.
    project_root : str or Path
        Where ``tests/imaging/data/ibsi1_reference_values`` (the C-E tables) is found.
    check : callable
        :func:`ibsi_check` or a stand-in with its signature (tests pass a cached one).
    n_workers : int
        Processes running the checks side by side (each check is single-threaded; MIRP's runs
        take minutes, so 2 workers on 2 cores halve the wall time).
    """
    folder = Path(data_dir)
    jobs: dict[tuple[str, str], tuple[str, Path, Path]] = {}
    for config in configs:
        key = config if config == "digital" else config.upper()
        if key not in IBSI_CONFIGS:
            raise DataError(f"unknown IBSI configuration {config!r}")
        phantom = folder / ("ibsi1_digital_phantom" if key == "digital" else "ibsi1_ct_phantom")
        reference = reference_table(key, folder, project_root)
        for engine in engines:
            jobs[(key, engine)] = (key, phantom, reference)
    if n_workers <= 1 or len(jobs) <= 1:
        tables = {job: check(*args, engine=job[1]) for job, args in jobs.items()}
        return conformance_tables(tables)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # the slow runs first (MIRP, per-slice configurations), so the pool ends together
    order = sorted(jobs, key=lambda job: (job[1] != "mirp", job[0] not in ("A", "B")))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=context) as pool:
        futures = {job: pool.submit(check, *jobs[job], engine=job[1]) for job in order}
        done = {job: future.result() for job, future in futures.items()}
    return conformance_tables({job: done[job] for job in jobs})


# --------------------------------------------------------------------------- agreement


def pyradiomics_to_ibsi(
    features: pd.DataFrame, params: str | Path | RadiomicsParams = "lung-ct"
) -> pd.DataFrame:
    """Rename pyradiomics feature columns to IBSI tags (``ibsi_feature_map.csv``).

    Only tags whose texture aggregation matches the run's own (3D averaged for ``lung-ct``) are
    kept, with the map's transform applied (e.g. kurtosis - 3); id columns stay.
    """
    base = load_params(params)
    mapping = ibsi_feature_map()
    columns = {c: features[c] for c in ("lesion_id", "patient_id", "cohort") if c in features}
    for row in mapping.itertuples(index=False):
        if not row.feature or row.feature.startswith("diagnostics_"):
            continue
        if _run_name(row.aggregation, base) != "base":
            continue
        column = f"original_{row.feature}"
        if column in features:
            transform = _TRANSFORMS[row.transform or "identity"]
            columns[row.tag] = features[column].astype(float).map(transform)
    return pd.DataFrame(columns, index=features.index)


def engine_agreement(
    manifest: pd.DataFrame,
    params: str | Path | RadiomicsParams = "lung-ct",
    *,
    n_workers: int = 1,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Relative differences between pyradiomics and MIRP for the features both compute.

    Both engines run through :func:`~irtscope.imaging.extract_features` with the same
    parameters (``engine`` switched), so interpolation, re-segmentation and discretisation
    settings are the same request to both; where they still disagree, the ``note`` column gives
    the documented definition difference from ``ibsi_feature_map.csv``.

    Returns
    -------
    pandas.DataFrame
        One row per lesion and IBSI tag: ``lesion_id``, ``tag``, ``family``, ``pyradiomics``,
        ``mirp``, ``rel_diff`` (``|a - b| / max(|a|, |b|)``, 0 when both are 0) and ``note``.

    Raises
    ------
    DataError
        An engine failed on every lesion.
    """
    from irtscope.imaging._extract import extract_features

    base = load_params(params)
    results = {}
    for engine in ENGINES:
        run = base.model_copy(update={"engine": engine})
        result = extract_features(manifest, run, n_workers=n_workers, cache_dir=cache_dir)
        if result.features.empty:
            errors = "; ".join(result.failures["error"].astype(str).head(3))
            raise DataError(f"engine {engine}: no lesion could be extracted ({errors})")
        results[engine] = result.features
    pyr = pyradiomics_to_ibsi(results["pyradiomics"], base).set_index("lesion_id")
    mirp = results["mirp"].set_index("lesion_id")
    notes = ibsi_feature_map().set_index("tag")["note"]
    why = _agreement_reason(base)
    rows = []
    for lesion in pyr.index.intersection(mirp.index):
        for tag in pyr.columns:
            if tag in ("patient_id", "cohort") or tag not in mirp.columns:
                continue
            a, b = float(pyr.at[lesion, tag]), float(mirp.at[lesion, tag])
            if not (np.isfinite(a) and np.isfinite(b)):
                continue
            scale = max(abs(a), abs(b))
            rows.append(
                {
                    "lesion_id": lesion,
                    "tag": tag,
                    "family": _family(tag),
                    "pyradiomics": a,
                    "mirp": b,
                    "rel_diff": abs(a - b) / scale if scale > 0 else 0.0,
                    "note": "; ".join(n for n in (why, str(notes.get(tag, "") or "")) if n),
                }
            )
    return pd.DataFrame(
        rows, columns=["lesion_id", "tag", "family", "pyradiomics", "mirp", "rel_diff", "note"]
    )


def _agreement_reason(params: RadiomicsParams) -> str:
    """The setting-level reason both engines see different voxels, when there is one."""
    if params.setting.resampled_pixel_spacing:
        return (
            "resampledPixelSpacing: pyradiomics anchors the new grid at the ROI bounding box and "
            "resamples the mask by nearest neighbour, MIRP centres the grid (IBSI) and "
            "interpolates the mask: different voxels, most visible on small lesions; "
            "irtscope.interpolation gives pyradiomics the IBSI grid"
        )
    return ""


def agreement_summary(agreement: pd.DataFrame) -> pd.DataFrame:
    """Per family: features compared, median and maximum relative difference, share within 1%."""
    if agreement.empty:
        return pd.DataFrame(
            columns=["family", "features", "median_rel_diff", "max_rel_diff", "within_1pct"]
        )
    grouped = agreement.groupby("family", sort=False)["rel_diff"]
    return pd.DataFrame(
        {
            "features": agreement.groupby("family", sort=False)["tag"].nunique(),
            "median_rel_diff": grouped.median(),
            "max_rel_diff": grouped.max(),
            "within_1pct": grouped.apply(lambda s: float((s <= 0.01).mean())),
        }
    ).reset_index()
