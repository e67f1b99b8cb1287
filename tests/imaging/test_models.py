"""Pipelines, validation table, report and CLI on small synthetic lesion frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from markupsafe import Markup
from sksurv.util import Surv
from typer.testing import CliRunner

from irtscope import DataError
from irtscope.imaging._evaluate import grouped_cv_predict
from irtscope.imaging._imaging_report import internal_external_summary, write_imaging_report
from irtscope.imaging._models import (
    make_radiomics_classifier,
    make_survival_forest,
    make_tuned,
    radiomics_columns,
)
from irtscope.imaging._validation import internal_external_table, merge_features, patient_level

COHORTS = (("DEV", 0.0, 1.0, 40), ("EXT1", 2.0, 1.5, 25), ("EXT2", -1.0, 0.7, 25))


def lesion_frame(seed: int = 0, n_features: int = 8, simulated: bool = True) -> pd.DataFrame:
    """Lesions nested in patients; ``original_firstorder_f0`` carries the PD signal.

    Each cohort adds its own location/scale to every feature (a scanner effect), so an
    unharmonised model transfers worse than a harmonised one.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for cohort, shift, scale, n_patients in COHORTS:
        for p in range(n_patients):
            patient = f"{cohort}-P{p:03d}"
            patient_effect = rng.normal()
            n_lesions = int(rng.integers(1, 5))
            os_time = rng.exponential(20 * np.exp(-0.8 * patient_effect))
            censor = rng.uniform(5, 40)
            pfs_time = min(os_time, rng.exponential(8 * np.exp(-0.8 * patient_effect)))
            for k in range(n_lesions):
                latent = 0.7 * patient_effect + rng.normal()
                values = rng.normal(size=n_features)
                values[0] = latent + 0.5 * rng.normal()
                row = {
                    "patient_id": patient,
                    "lesion_id": f"{patient}-L{k + 1}",
                    "cohort": cohort,
                    "pd": int(latent + 0.3 * rng.normal() > 0.3),
                    "os_time": round(min(os_time, censor), 2),
                    "os_event": int(os_time <= censor),
                    "pfs_time": round(min(pfs_time, censor), 2),
                    "pfs_event": int(pfs_time <= censor),
                    "pdl1": float(rng.choice([0.0, 5.0, 60.0])),
                    "arm": "ICI+SBRT" if p % 2 else "ICI",
                    "simulated": simulated,
                    "original_shape_VoxelVolume": float(np.exp(rng.normal(7, 0.5))),
                }
                for j, value in enumerate(values):
                    row[f"original_firstorder_f{j}"] = 10 + shift + scale * value
                rows.append(row)
    frame = pd.DataFrame(rows)
    # patient-level columns must be constant within a patient
    first = frame.groupby("patient_id")[["pdl1"]].transform("first")
    frame["pdl1"] = first["pdl1"]
    return frame

FAST = {"n_estimators": 15, "random_state": 0}


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return lesion_frame()


@pytest.fixture(scope="module")
def validation(frame: pd.DataFrame):
    return internal_external_table(
        frame, development="DEV", tasks=("pd", "os"), n_estimators=15, n_boot=30, n_splits=3,
        tune=False, random_state=0,
    )


def test_radiomics_columns(frame: pd.DataFrame) -> None:
    columns = radiomics_columns(frame)
    assert "original_firstorder_f0" in columns and "pd" not in columns
    assert "patient_id" not in columns and "original_shape_VoxelVolume" in columns


@pytest.mark.parametrize("harmonize", [False, True])
def test_classifier_pipeline_predicts_unseen_cohort(frame: pd.DataFrame, harmonize: bool) -> None:
    dev, ext = frame[frame.cohort == "DEV"], frame[frame.cohort == "EXT1"]
    model = make_radiomics_classifier(
        radiomics_columns(frame), harmonize=harmonize, **FAST
    ).fit(dev, dev["pd"])
    proba = model.predict_proba(ext)[:, 1]
    assert proba.shape == (len(ext),) and np.all((proba >= 0) & (proba <= 1))
    assert model.named_steps["model"].n_features_in_ <= len(radiomics_columns(frame))


def test_survival_pipeline_with_clinical(frame: pd.DataFrame) -> None:
    patients = patient_level(frame)
    dev = patients[patients.cohort == "DEV"]
    y = Surv.from_arrays(dev["os_event"].astype(bool), dev["os_time"])
    model = make_survival_forest(
        radiomics_columns(frame), ["pdl1", "arm"], harmonize=True, **FAST
    ).fit(dev, y)
    risk = model.predict(patients[patients.cohort == "EXT2"])
    assert np.all(np.isfinite(risk))
    assert 0.0 <= model.score(dev, y) <= 1.0  # Harrell's C-index


def test_clinical_only_model_handles_missing_and_unseen_categories(frame: pd.DataFrame) -> None:
    patients = patient_level(frame).copy()
    patients.loc[patients.index[:5], "pdl1"] = np.nan
    dev = patients[patients.cohort == "DEV"]
    y = Surv.from_arrays(dev["os_event"].astype(bool), dev["os_time"])
    model = make_survival_forest(clinical=["pdl1", "arm"], **FAST).fit(dev, y)
    other = patients[patients.cohort == "EXT1"].assign(arm="ICI+RT")  # unseen arm label
    assert np.all(np.isfinite(model.predict(other)))


def test_nested_tuning_in_grouped_cv(frame: pd.DataFrame) -> None:
    dev = frame[frame.cohort == "DEV"]
    search = make_tuned(
        make_radiomics_classifier(radiomics_columns(frame), **FAST), inner_splits=2,
        random_state=0,
    )
    scores = grouped_cv_predict(search, dev, dev["pd"].to_numpy(), dev["patient_id"], n_splits=3,
                                random_state=0)
    assert scores.shape == (len(dev),) and np.all((scores >= 0) & (scores <= 1))


def test_internal_external_table(validation) -> None:
    table = validation.table
    assert validation.simulated
    # pd: 1 model; os: radiomics and radiomics+clinical -> 3 models x 2 harmonisations x
    # (1 internal + 2 external)
    assert len(table) == 3 * 2 * 3
    assert set(table["setting"]) == {"internal 3-fold CV", "external"}
    assert set(table["harmonisation"]) == {"off", "ComBat"}
    auc = table[table.metric == "AUC"]
    assert (auc["estimate"] > 0.6).all()  # the synthetic signal is found everywhere
    assert ((auc["ci_lower"] <= auc["estimate"]) & (auc["estimate"] <= auc["ci_upper"])).all()
    assert auc.loc[auc.harmonisation == "ComBat", "delong_p_vs_off"].notna().all()
    # Harmonisation matters on the shifted external cohorts, not just in noise.
    ext = auc[auc.setting == "external"].set_index(["cohort", "harmonisation"])["estimate"]
    assert ext.loc[("EXT1", "ComBat")] >= ext.loc[("EXT1", "off")] - 0.05
    surv = table[table.metric == "C-index (Harrell)"]
    assert surv["estimate"].between(0, 1).all() and surv["n_events"].gt(0).all()
    summary = internal_external_summary(table)
    assert list(summary.columns[-3:]) == [
        "internal 3-fold CV DEV", "external EXT1", "external EXT2",
    ]
    assert summary["data"].eq("SIMULATED").all()


def test_validation_errors(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="development cohort"):
        internal_external_table(frame, development="NOPE")
    with pytest.raises(DataError, match="unknown task"):
        internal_external_table(frame, development="DEV", tasks=["dfs"])


def test_merge_features_checks_identity(frame: pd.DataFrame) -> None:
    manifest = frame[["patient_id", "lesion_id", "cohort", "pd", "os_time", "os_event"]]
    features = frame[["lesion_id", "patient_id", "cohort", *radiomics_columns(frame)]]
    merged = merge_features(manifest, features.iloc[:-3])
    assert len(merged) == len(frame) - 3 and "pd" in merged
    bad = features.assign(cohort="X")
    with pytest.raises(DataError, match="disagree on cohort"):
        merge_features(manifest, bad)


def test_report_is_labelled_and_escapes(validation, tmp_path: Path) -> None:
    section = {
        "title": "Deep learning <b>",
        "html": Markup("<p>CNN AUC &lt;script&gt;</p>"),
        "figures": [],
    }
    files = write_imaging_report(
        validation, tmp_path, extra_sections=[section], provenance={"note": "<script>x</script>"}
    )
    html = files.html.read_text(encoding="utf-8")
    assert "SIMULATED DATA" in html and "<script>" not in html
    assert "Deep learning &lt;b&gt;" in html and "<p>CNN AUC" in html
    assert html.count("data:image/png;base64") >= 3  # ROC, calibration, KM
    metrics = pd.read_csv(files.metrics_csv)
    assert metrics["data"].eq("SIMULATED").all()
    for name in ("roc_pd", "calibration_pd", "km_overall"):
        assert (tmp_path / "figures" / f"{name}.png").is_file()
    with pytest.raises(DataError, match="Markup"):
        write_imaging_report(validation, tmp_path, extra_sections=[{"title": "x", "html": "<p>"}])


def test_cli_evaluate(frame: pd.DataFrame, tmp_path: Path) -> None:
    from irtscope.cli import app

    manifest = frame[
        ["patient_id", "lesion_id", "cohort", "pd", "os_time", "os_event", "pfs_time",
         "pfs_event", "pdl1", "arm", "simulated"]
    ].assign(image_path="img.nii.gz", mask_path="mask.nii.gz")
    manifest.to_csv(tmp_path / "manifest.csv", index=False)
    features = frame[["lesion_id", "patient_id", "cohort", *radiomics_columns(frame)]]
    features.to_parquet(tmp_path / "features.parquet")
    result = CliRunner().invoke(
        app,
        ["--quiet", "imaging", "evaluate", "--manifest", str(tmp_path / "manifest.csv"),
         "--features", str(tmp_path / "features.parquet"), "--out", str(tmp_path / "out"),
         "--development", "DEV", "--tasks", "pd", "--n-boot", "20", "--n-estimators", "10",
         "--n-splits", "3", "--no-tune"],
    )
    assert result.exit_code == 0, result.output
    metrics = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert set(metrics["task"]) == {"per-lesion PD"} and len(metrics) == 6
    assert (tmp_path / "out" / "report.html").is_file()


def test_harmonise_by_scanner_column(frame: pd.DataFrame) -> None:
    scanner = frame.assign(scanner=frame["cohort"].map({"DEV": "A", "EXT1": "B", "EXT2": "B"}))
    result = internal_external_table(
        scanner, development="DEV", tasks=("pd",), harmonize=(True,), batch_column="scanner",
        n_estimators=10, n_boot=20, n_splits=3, tune=False, random_state=0,
    )
    assert result.settings["batch_column"] == "scanner"
    assert result.table["estimate"].notna().all() and len(result.table) == 3


def test_nested_tuning_is_skipped_with_a_note_when_the_cohort_is_too_small(
    frame: pd.DataFrame,
) -> None:
    # 8 development patients, 3 outer x 3 inner folds: inner folds would hold one patient or
    # one class; scikit-learn then warns (errors here) and sksurv raises "Need a minimum of
    # two samples" deep inside GridSearchCV.
    dev = frame[frame.cohort == "DEV"]
    small = frame[frame.patient_id.isin(dev.patient_id.unique()[:8]) | (frame.cohort != "DEV")]
    result = internal_external_table(
        small, development="DEV", tasks=("pd", "os"), harmonize=(False,), n_estimators=10,
        n_boot=10, n_splits=3, tune=True, random_state=0,
    )
    assert result.table["tuning"].str.startswith("skipped: ").all()
    assert result.table["tuning"].str.contains("nested 3-fold tuning needs about").all()
    big = internal_external_table(
        frame, development="DEV", tasks=("pd",), harmonize=(False,), n_estimators=10,
        n_boot=10, n_splits=3, tune=True, random_state=0,
    )
    assert big.table["tuning"].eq("nested").all()


def test_a_model_that_cannot_be_fitted_is_one_clear_error(
    frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import irtscope.imaging._validation as validation

    def fail(*args, **kwargs):
        raise ValueError("Need a minimum of two samples")  # what sksurv says on a tiny fold

    monkeypatch.setattr(validation, "grouped_cv_predict", fail)
    with pytest.raises(DataError, match=r"overall survival.*'DEV' \(40 patients.*two samples"):
        internal_external_table(
            frame, development="DEV", tasks=("os",), harmonize=(False,), n_estimators=10,
            n_boot=10, n_splits=3, tune=False, random_state=0,
        )


def test_report_escapes_cohort_names_and_lesion_ids(tmp_path: Path) -> None:
    """Cohort names and lesion ids come from the user's manifest: they must never become HTML."""
    evil = "<script>alert(1)</script>"
    frame = lesion_frame()
    frame["cohort"] = frame["cohort"].replace({"EXT1": evil, "DEV": "DEV<b>"})
    frame["lesion_id"] = frame["lesion_id"] + "<i>"
    result = internal_external_table(
        frame, development="DEV<b>", tasks=("pd",), harmonize=(False,), n_estimators=10,
        n_boot=10, n_splits=3, tune=False, random_state=0,
    )
    files = write_imaging_report(result, tmp_path)
    html = files.html.read_text(encoding="utf-8")
    assert "<script>" not in html and "DEV<b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "DEV&lt;b&gt;" in html
    # every figure caption says SIMULATED (captions get copied without the page banner)
    captions = html.split("<figcaption>")[1:]
    assert captions and all(c.startswith("SIMULATED data.") for c in captions)
    assert pd.read_csv(files.predictions_csv)["data"].eq("SIMULATED").all()


def test_deep_section_escapes_cohort_names() -> None:
    from irtscope.imaging._deep import DeepConfig
    from irtscope.imaging._deep_report import _section, comparison_table

    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 20)
    scores = pd.DataFrame({
        "cohort": ["<img src=x onerror=alert(1)>"] * 40, "evaluation": "external",
        "patient_id": np.repeat(np.arange(20), 2), "pd": y,
        "radiomics": rng.uniform(size=40), "deep": y * 0.3 + rng.uniform(size=40),
    })
    section = _section(
        comparison=comparison_table(scores, n_boot=10), config=DeepConfig.preset("small"),
        settings={"n_splits": 5, "n_boot": 10}, timings={}, best_epoch=1, n_failures=0,
        simulated=True, dev_cohort="DEV<script>", figures=[],
    )
    html = str(section["html"])
    assert "<img" not in html and "<script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "DEV&lt;script&gt;" in html
    assert "SIMULATED" in section["title"] and "SIMULATED DATA" in html


def test_report_embeds_the_ibsi_conformance_table(validation, tmp_path: Path) -> None:
    table = pd.DataFrame([
        {"config": "C", "engine": "mirp", "computed": 210, "in_tolerance": 208},
        {"config": "C", "engine": "any engine <x>", "computed": 270, "in_tolerance": 270},
    ])
    html = write_imaging_report(validation, tmp_path, ibsi_conformance=table).html.read_text()
    assert 'id="ibsi"' in html and "IBSI 1 conformance" in html
    assert "any engine &lt;x&gt;" in html and "208" in html
