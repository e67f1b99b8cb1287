"""IBSI 1 compliance check: run a phantom through a preset and compare with reference values.

The IBSI reference tables (``value;tolerance;tag``) are the executable specification of
radiomics features. :func:`ibsi_check` runs pyradiomics on the IBSI CT phantom (or the digital
phantom) with one of the shipped presets and lines every reference tag up with our value.

The mapping from IBSI tags to pyradiomics features lives in ``ibsi_feature_map.csv`` beside
this module, as data: ``tag``, ``feature`` (pyradiomics name without the ``original_`` prefix,
or a ``diagnostics_`` entry with an optional ``[i]`` index), ``aggregation`` (how the texture
matrix is built), ``transform`` (how the pyradiomics value becomes the IBSI quantity) and
``note`` (the definition difference or the reason the tag is not computed). Tags without a
feature are reported as *not computed*, never as failures.

Texture aggregation (IBSI 1 section 3.1.4): pyradiomics builds one matrix per direction over
the whole ROI and averages features over directions. With ``force2D`` (in-plane directions
only) that is IBSI's "2.5D, averaged" (``..._2_5D_avg``); in 3D it is "3D, averaged"
(``..._3D_avg``). ``weightingNorm: no_weighting`` sums the direction matrices first, which is
IBSI's merged variant (``..._comb``). IBSI's "2D" (one matrix per slice, features averaged
over slices) has no pyradiomics equivalent.
"""

from __future__ import annotations

import csv
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from irtscope._errors import ConfigError, DataError
from irtscope.imaging._extract import compute_features
from irtscope.imaging._params import RadiomicsParams, load_params

__all__ = [
    "IBSI_CONFIGS",
    "ibsi_check",
    "ibsi_feature_map",
    "ibsi_pass_share",
    "reference_table",
]

#: IBSI configuration -> (preset, reference file name in ibsi1_reference_values/).
IBSI_CONFIGS: dict[str, tuple[str, str]] = {
    "digital": ("ibsi-digital", "ibsi_1_dig_phantom.csv"),
    "A": ("ibsi-a", "ibsi_1_chest_config_a.csv"),
    "B": ("ibsi-b", "ibsi_1_chest_config_b.csv"),
    "C": ("ibsi-c", "ibsi_1_chest_config_c.csv"),
    "D": ("ibsi-d", "ibsi_1_chest_config_d.csv"),
    "E": ("ibsi-e", "ibsi_1_chest_config_e.csv"),
}
#: Where the C-E tables live when the shared data folder has only A, B and the digital phantom:
#: the project's test data (copied verbatim from MIRP's test data, source in each file's header).
PROJECT_REFERENCE_DIR = Path("tests") / "imaging" / "data" / "ibsi1_reference_values"

#: Extraction engines ``ibsi_check`` can run (``engine:`` in the parameter YAML).
ENGINES = ("pyradiomics", "mirp")
#: Columns of an ``ibsi_check`` table.
COLUMNS = ["tag", "feature", "ours", "reference", "tolerance", "status", "note"]
_FEATURE_FAMILIES = (
    "morph_",
    "loc_",
    "stat_",
    "ih_",
    "ivh_",
    "cm_",
    "rlm_",
    "szm_",
    "dzm_",
    "ngt_",
    "ngl_",
)

_TRANSFORMS = {
    "identity": lambda x: x,
    "minus_3": lambda x: x - 3.0,
    "inverse": lambda x: 1.0 / x,
    "inverse_minus_1": lambda x: 1.0 / x - 1.0,
    "cube": lambda x: x**3,
    "comp1": lambda x: x**1.5 / (6.0 * math.pi),
}
_INDEXED = re.compile(r"^(?P<name>.+)\[(?P<index>\d+)\]$")


def ibsi_feature_map() -> pd.DataFrame:
    """The IBSI tag <-> pyradiomics mapping shipped with irtscope (one row per IBSI tag)."""
    text = (resources.files("irtscope.imaging") / "ibsi_feature_map.csv").read_text("utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    frame = pd.DataFrame(rows, columns=["tag", "feature", "aggregation", "transform", "note"])
    unknown = set(frame["transform"]) - set(_TRANSFORMS) - {""}
    if unknown:  # pragma: no cover - guards edits of the CSV
        raise ConfigError(f"ibsi_feature_map.csv: unknown transform(s) {sorted(unknown)}")
    return frame


def reference_table(config: str, data_dir: str | Path, project_root: str | Path = ".") -> Path:
    """The IBSI reference table of a configuration: the shared data folder first, then the project.

    ``data_dir`` is the folder holding ``ibsi1_reference_values/`` (``../shared/data/imaging``);
    tables it lacks (configurations C-E) are looked up in ``PROJECT_REFERENCE_DIR`` under
    ``project_root``.

    Raises
    ------
    DataError
        Neither place has the table.
    """
    key = config if config == "digital" else config.upper()
    if key not in IBSI_CONFIGS:
        raise ConfigError(f"unknown IBSI configuration {config!r}; use digital or A-E")
    name = IBSI_CONFIGS[key][1]
    candidates = [
        Path(data_dir) / "ibsi1_reference_values" / name,
        Path(project_root) / PROJECT_REFERENCE_DIR / name,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"no IBSI reference table for configuration {key}: looked for "
        + " and ".join(repr(str(p)) for p in candidates)
        + "; pass --reference"
    )


def _read_reference(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"IBSI reference table {str(path)!r} not found")
    frame = pd.read_csv(path, sep=";", comment="#")
    frame.columns = [c.strip().lower() for c in frame.columns]
    if not {"reference value", "tolerance", "tag"} <= set(frame.columns):
        raise DataError(f"{path}: expected columns 'reference value;tolerance;tag'")
    return frame.rename(columns={"reference value": "reference"})[["tag", "reference", "tolerance"]]


def _read_phantom(phantom_dir: Path, source: str = "auto") -> tuple[Any, Any]:
    """Image and 0/1 mask of an IBSI phantom folder.

    ``source`` is ``"nifti"`` (``image.nii.gz`` + ``mask.nii.gz``), ``"dicom"`` (the DICOM
    series in ``dicom/image`` + the RTSTRUCT in ``dicom/rtstruct``) or ``"auto"`` (NIfTI when
    present). Both go through the shared reader so the check exercises the production path.
    """
    import SimpleITK as sitk

    from irtscope.imaging._io import read_image, read_mask

    nifti = (phantom_dir / "image.nii.gz", phantom_dir / "mask.nii.gz")
    dicom = (phantom_dir / "dicom" / "image", phantom_dir / "dicom" / "rtstruct")
    if source == "auto":
        source = "nifti" if all(p.exists() for p in nifti) else "dicom"
    if source not in ("nifti", "dicom"):
        raise ConfigError(f"unknown phantom source {source!r}; use nifti, dicom or auto")
    image_path, mask_path = nifti if source == "nifti" else dicom
    if not (image_path.exists() and mask_path.exists()):
        raise DataError(f"{phantom_dir}: no {source} phantom ({image_path.name}, {mask_path.name})")
    image = read_image(image_path)
    mask = read_mask(mask_path, image)
    return sitk.Cast(image, sitk.sitkFloat64), mask


def _run_name(aggregation: str, base: RadiomicsParams) -> str:
    """The pyradiomics run that serves a tag: ``base`` or e.g. ``2_5D`` / ``3D_comb``."""
    if not aggregation:
        return "base"
    dim = "3D" if aggregation.startswith("3D") else "2_5D"
    merged = aggregation.endswith("_comb")
    base_dim = "2_5D" if base.setting.force_2d else "3D"
    if dim == base_dim and not merged:
        return "base"
    return dim + ("_comb" if merged else "")


def _passes_needed(rows: pd.DataFrame, base: RadiomicsParams) -> dict[str, RadiomicsParams]:
    """One pyradiomics run per texture aggregation the reference table asks for."""
    texture = {"glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    runs: dict[str, RadiomicsParams] = {"base": base}
    for name in sorted({_run_name(a, base) for a in rows["aggregation"]} - {"base"}):
        dim, merged = name.removesuffix("_comb"), name.endswith("_comb")
        classes = {"glcm", "glrlm"} if merged else texture
        changes: dict[str, Any] = {"force2D": dim == "2_5D"}
        if dim == "2_5D":
            changes["force2Ddimension"] = 0
        if merged:
            changes["weightingNorm"] = "no_weighting"
        variant = base.with_settings(**changes)
        keep = {c: v for c, v in variant.feature_class.items() if c in classes}
        runs[name] = variant.model_copy(update={"feature_class": keep})
    return runs


def _lookup(values: dict[str, Any], feature: str) -> float | None:
    match = _INDEXED.match(feature)
    name, index = (match["name"], int(match["index"])) if match else (feature, None)
    key = name if name.startswith("diagnostics_") else f"original_{name}"
    if key not in values:
        return None
    value = values[key]
    if index is not None:
        value = value[index]
    return float(value)


def _round_sig(x: float, digits: int = 3) -> float:
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def _status(ours: float, reference: float, tolerance: float) -> str:
    # IBSI publishes values to 3 significant digits: a value that rounds to the reference
    # matches it even when the tolerance is 0 (e.g. a voxel spacing of 0.97699999 mm).
    if abs(ours - reference) <= tolerance + 1e-12 * max(1.0, abs(reference)):
        return "pass"
    return "pass" if _round_sig(ours) == _round_sig(reference) else "fail"


def ibsi_check(
    config: str,
    phantom_dir: str | Path,
    reference_csv: str | Path,
    params: str | Path | RadiomicsParams | None = None,
    *,
    source: str = "auto",
    engine: str | None = None,
) -> pd.DataFrame:
    """Compare our features on an IBSI phantom with the IBSI 1 reference values.

    Parameters
    ----------
    config : str
        ``"digital"`` or an IBSI CT configuration ``"A"`` ... ``"E"``; selects the preset.
    phantom_dir : str or Path
        Folder with ``image.nii.gz`` and ``mask.nii.gz`` (or ``dicom/image`` and
        ``dicom/rtstruct``).
    reference_csv : str or Path
        IBSI reference table (``reference value;tolerance;tag``).
    params : optional
        Override the preset (to test a modified configuration).
    source : {"auto", "nifti", "dicom"}
        Which copy of the phantom to read (the CT phantom ships as NIfTI and DICOM+RTSTRUCT).
    engine : {"pyradiomics", "mirp"}, optional
        Extraction engine; default: the one the parameters name. pyradiomics values go through
        ``ibsi_feature_map.csv``; MIRP reports IBSI tags directly.

    Returns
    -------
    pandas.DataFrame
        One row per reference tag: ``tag``, ``feature``, ``ours``, ``reference``,
        ``tolerance``, ``status`` (``pass``, ``fail`` or ``not computed``) and ``note``.
    """
    key = config if config == "digital" else config.upper()
    if key not in IBSI_CONFIGS:
        raise ConfigError(f"unknown IBSI configuration {config!r}; use digital or A-E")
    base = load_params(params if params is not None else IBSI_CONFIGS[key][0])
    if engine is not None:
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
        base = base.model_copy(update={"engine": engine})
    reference = _read_reference(Path(reference_csv))
    if base.engine == "mirp":
        return _check_mirp(key, reference, base, Path(phantom_dir), source)
    mapping = ibsi_feature_map().set_index("tag")
    table = reference.join(mapping, on="tag")
    table[["feature", "aggregation", "transform"]] = table[
        ["feature", "aggregation", "transform"]
    ].fillna("")
    table["note"] = table["note"].fillna("tag missing from ibsi_feature_map.csv")

    image, mask = _read_phantom(Path(phantom_dir), source)
    runs = _passes_needed(table[table["feature"] != ""], base)
    values = {
        name: compute_features(image, mask, run, diagnostics=True, lesion=f"IBSI {key} ({name})")
        for name, run in runs.items()
    }

    ours = []
    for row in table.itertuples(index=False):
        value = None
        if row.feature:
            raw = _lookup(values[_run_name(row.aggregation, base)], row.feature)
            value = None if raw is None else _TRANSFORMS[row.transform or "identity"](raw)
        ours.append(value)
    table["ours"] = ours
    table["status"] = _statuses(table)
    table.loc[(table["status"] == "not computed") & (table["note"] == ""), "note"] = (
        "pyradiomics did not report this entry for this configuration"
    )
    return table[COLUMNS]


def _statuses(table: pd.DataFrame) -> list[str]:
    """pass / fail / not computed / no reference (IBSI reached no consensus: no value given)."""
    out = []
    for row in table.itertuples(index=False):
        if pd.isna(row.reference):
            out.append("no reference")
        elif row.ours is None or pd.isna(row.ours):
            out.append("not computed")
        else:
            out.append(_status(float(row.ours), float(row.reference), float(row.tolerance)))
    return out


def _check_mirp(
    key: str, reference: pd.DataFrame, params: RadiomicsParams, phantom_dir: Path, source: str
) -> pd.DataFrame:
    """The MIRP engine: one run, values already under IBSI tags (image diagnostics excepted)."""
    image, mask = _read_phantom(phantom_dir, source)
    values = compute_features(image, mask, params, lesion=f"IBSI {key} (mirp)")
    table = reference.copy()
    table["feature"] = [tag if tag in values else "" for tag in table["tag"]]
    table["ours"] = [values.get(tag) for tag in table["tag"]]
    table["status"] = _statuses(table)
    diagnostic = ~table["tag"].str.startswith(_FEATURE_FAMILIES)
    table["note"] = ""
    table.loc[(table["status"] == "not computed") & diagnostic, "note"] = (
        "image/ROI diagnostic of a processing stage: MIRP does not report it "
        "(the pyradiomics engine does)"
    )
    table.loc[(table["status"] == "not computed") & ~diagnostic, "note"] = (
        "MIRP did not report this feature for this configuration"
    )
    return table[COLUMNS]


def ibsi_pass_share(table: pd.DataFrame) -> float:
    """Share of *computed* tags that pass (not-computed tags are excluded, not failures)."""
    computed = table[table["status"].isin(["pass", "fail"])]
    return float((computed["status"] == "pass").mean()) if len(computed) else float("nan")
