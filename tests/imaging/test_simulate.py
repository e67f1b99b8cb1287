"""The simulator: determinism, manifest contract, geometry, acquisition shift, ground truth.

One small simulation (about 14 patients) is written once per module; statistical properties
of the generative model are checked on clinical/phenotype draws, which need no images and so
can use hundreds of patients in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from irtscope import ConfigError
from irtscope.cli import app
from irtscope.imaging import load_manifest, simulate_cohorts
from irtscope.imaging._simulate import (
    COHORTS,
    TISSUE_CODES,
    GenerativeModel,
    _draw_patient,
)

SCALE = 0.07  # DEV 5, EXT1 4, EXT2 5 patients


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int | None]]]:
    calls: list[tuple[int, int | None]] = []
    out = tmp_path_factory.mktemp("sim")
    path = simulate_cohorts(
        out, seed=3, scale=SCALE, progress=lambda a, t=None, d="": calls.append((a, t))
    )
    return path, calls


@pytest.fixture(scope="module")
def manifest(sim: tuple[Path, list]) -> pd.DataFrame:
    return pd.read_csv(sim[0])


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    """Clinical and true-phenotype draws for 300 patients per cohort (no images)."""
    model = GenerativeModel()
    rows = []
    for cohort in COHORTS:
        for number in range(1, 301):
            p = _draw_patient(cohort, number, 11, model)
            for les in p.lesions:
                rows.append(
                    {
                        "cohort": cohort.name,
                        "patient_id": p.patient_id,
                        "z": p.z,
                        "pdl1": p.pdl1,
                        "arm": p.arm,
                        "os_time": p.os_time,
                        "os_event": p.os_event,
                        "pfs_time": p.pfs_time,
                        "pfs_event": p.pfs_event,
                        "pd": les.pd,
                        "latent": les.latent,
                        "radius": les.radius_mm,
                        "heterogeneity": les.heterogeneity_hu,
                        "lobulation": les.lobulation,
                        "margin": les.margin_mm,
                        "n_lesions": len(p.lesions),
                    }
                )
    return pd.DataFrame(rows)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_manifest_passes_contract(sim: tuple[Path, list], manifest: pd.DataFrame) -> None:
    loaded = load_manifest(sim[0])  # validates types, paths, patient-level consistency
    assert len(loaded) == len(manifest) > 0
    assert loaded["simulated"].all()
    assert set(loaded["cohort"]) == {"DEV-SIM", "EXT1-SIM", "EXT2-SIM"}
    assert loaded.groupby("cohort")["patient_id"].nunique().to_dict() == {
        "DEV-SIM": 5,
        "EXT1-SIM": 4,
        "EXT2-SIM": 5,
    }
    for column in ("pd", "os_time", "os_event", "pfs_time", "pfs_event", "pdl1", "arm", "age"):
        assert loaded[column].notna().all(), column
    assert set(loaded["arm"]) <= {"ICI", "ICI+SBRT"}
    assert set(loaded["sex"]) <= {"M", "F"}
    counts = manifest.groupby("patient_id").size()
    assert counts.between(1, 6).all()
    assert (manifest.groupby("patient_id")["mask_label"].max() == counts).all()
    for column in ("image_path", "mask_path", "tissue_path"):
        assert manifest[column].str.contains("SIM_").all()
    assert manifest["latent_response"].notna().all()


def test_outputs_marked_simulated(sim: tuple[Path, list]) -> None:
    out = sim[0].parent
    readme = (out / "SIMULATED.txt").read_text()
    assert readme.startswith("SIMULATED DATA")
    assert "DEV-SIM" in readme and "seed 3" in readme
    assert '"simulated": true' in (out / "simulation.json").read_text()


def test_progress_called_once_per_patient(sim: tuple[Path, list]) -> None:
    calls = sim[1]
    assert len(calls) == 14
    assert all(a == 1 and t == 14 for a, t in calls)


def test_deterministic_and_scale_invariant(
    sim: tuple[Path, list], manifest: pd.DataFrame, tmp_path: Path
) -> None:
    again = simulate_cohorts(tmp_path / "a", seed=3, scale=0.02, cohorts=["EXT2-SIM"])
    other = simulate_cohorts(tmp_path / "b", seed=4, scale=0.02, cohorts=["EXT2-SIM"])
    m_again = pd.read_csv(again)
    # same seed: the same four EXT2 patients as in the full run, voxel for voxel
    first = manifest[manifest["patient_id"].isin(m_again["patient_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, m_again)
    out = sim[0].parent
    for rel in m_again["image_path"].unique():
        np.testing.assert_array_equal(_array(out / rel), _array(again.parent / rel))
    for rel in m_again["mask_path"].unique():
        np.testing.assert_array_equal(_array(out / rel), _array(again.parent / rel))
    # another seed: different patients
    m_other = pd.read_csv(other)
    assert not np.allclose(
        m_again.groupby("patient_id")["os_time"].first(),
        m_other.groupby("patient_id")["os_time"].first(),
    )


def test_masks_nonempty_inside_lung(sim: tuple[Path, list], manifest: pd.DataFrame) -> None:
    out = sim[0].parent
    for _, rows in manifest.groupby("patient_id"):
        ct = _array(out / rows["image_path"].iloc[0])
        labels = _array(out / rows["mask_path"].iloc[0])
        tissue = _array(out / rows["tissue_path"].iloc[0])
        assert ct.shape == labels.shape == tissue.shape
        assert set(np.unique(labels)) == {0, *rows["mask_label"]}
        lung_like = np.isin(tissue, [TISSUE_CODES[k] for k in ("lung", "vessel", "lesion")])
        for label in rows["mask_label"]:
            mask = labels == label
            assert mask.sum() >= 1, f"lesion {label} empty"
            ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
            assert lung_like[ring].mean() > 0.97  # surrounded by lung, not chest wall
            around = np.median(ct[ring & (labels == 0)])
            assert around < -300  # and it looks like lung
            # the lesion is much denser than its surroundings (small lesions on thick, blurred
            # slices lose contrast to partial volume, as on real CT)
            assert ct[mask].mean() > around + 250, (label, int(mask.sum()))


def test_phenotype_rendered(sim: tuple[Path, list], manifest: pd.DataFrame) -> None:
    """Mask volume follows the generated radius, so images carry the phenotype."""
    out = sim[0].parent
    volumes = []
    for _, row in manifest.iterrows():
        image = sitk.ReadImage(str(out / row["mask_path"]))
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000
        volumes.append((sitk.GetArrayFromImage(image) == row["mask_label"]).sum() * voxel_ml)
    rho = stats.spearmanr(volumes, manifest["true_volume_ml"]).statistic
    assert rho > 0.9


def test_acquisition_differs_between_cohorts(
    sim: tuple[Path, list], manifest: pd.DataFrame
) -> None:
    out = sim[0].parent
    measured = {}
    for cohort in COHORTS:
        rows = manifest[manifest["cohort"] == cohort.name].drop_duplicates("patient_id")
        sds, medians = [], []
        for _, row in rows.iterrows():
            image = sitk.ReadImage(str(out / row["image_path"]))
            assert image.GetSpacing() == pytest.approx(
                (
                    cohort.acquisition.pixel_spacing_mm,
                    cohort.acquisition.pixel_spacing_mm,
                    cohort.acquisition.slice_thickness_mm,
                )
            )
            ct = sitk.GetArrayFromImage(image).astype(float)
            muscle = _array(out / row["tissue_path"]) == TISSUE_CODES["muscle"]
            core = ndimage.binary_erosion(muscle, iterations=3)  # away from edges and blur
            sds.append(ct[core].std())
            medians.append(np.median(ct[core]))
        measured[cohort.name] = (np.mean(sds), np.mean(medians))
        acq = cohort.acquisition
        assert np.mean(sds) == pytest.approx(acq.noise_sd_hu, rel=0.2)
        assert np.mean(medians) == pytest.approx(45 + acq.hu_offset, abs=4)
    # noise ordering EXT1 > DEV > EXT2 and offsets far enough apart to matter
    assert measured["EXT1-SIM"][0] > measured["DEV-SIM"][0] > measured["EXT2-SIM"][0]
    assert measured["EXT1-SIM"][1] - measured["EXT2-SIM"][1] > 25


def test_pd_prevalence_and_latent_link(population: pd.DataFrame) -> None:
    prevalence = population.groupby("cohort")["pd"].mean()
    assert prevalence.between(0.2, 0.45).all(), prevalence.to_dict()
    # the latent response drives PD (strongly but not perfectly) ...
    auc = roc_auc_score(population["pd"], -population["latent"])
    assert 0.75 < auc < 0.92
    # ... and the phenotype: worse response -> larger, more heterogeneous, irregular, blurred
    for column in ("radius", "heterogeneity", "lobulation", "margin"):
        rho = stats.spearmanr(population["latent"], population[column]).statistic
        assert rho < -0.25, column
    # lesions of one patient share the patient's response
    patient_z = population.groupby("patient_id")[["z", "latent"]].mean()
    assert stats.pearsonr(patient_z["z"], patient_z["latent"]).statistic > 0.7
    # SBRT shifts the response up (abscopal effect): fewer PD lesions in the SBRT arm
    by_arm = population.groupby("arm")["pd"].mean()
    assert by_arm["ICI+SBRT"] < by_arm["ICI"]


def test_survival_times_and_censoring(population: pd.DataFrame) -> None:
    patients = population.drop_duplicates("patient_id")
    assert (patients["os_time"] > 0).all() and (patients["pfs_time"] > 0).all()
    assert (patients["pfs_time"] <= patients["os_time"]).all()
    os_censored = 1 - patients["os_event"].mean()
    pfs_censored = 1 - patients["pfs_event"].mean()
    assert 0.15 < os_censored < 0.5
    assert 0.02 < pfs_censored < 0.3
    assert pfs_censored < os_censored
    # better latent response and PD-L1 -> longer survival (concordance above chance)
    z_os = stats.spearmanr(patients["z"], patients["os_time"]).statistic
    assert z_os > 0.15
    assert stats.spearmanr(patients["z"], patients["pdl1"]).statistic > 0.2
    assert patients["pdl1"].between(0, 100).all()
    assert ((patients["pdl1"] >= 50).mean() > 0.2) and ((patients["pdl1"] < 1).mean() > 0.2)


def test_arms_balanced_in_blocks(population: pd.DataFrame) -> None:
    patients = population.drop_duplicates("patient_id")
    for _, rows in patients.groupby("cohort"):
        counts = rows["arm"].value_counts()
        assert counts["ICI"] == counts["ICI+SBRT"]  # 300 = 75 full blocks of four


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0}, "scale"),
        ({"scale": float("nan")}, "scale"),
        ({"crop_margin_mm": 50}, "crop_margin_mm"),
        ({"cohorts": ["PEMBRO"]}, "PEMBRO"),
    ],
)
def test_bad_settings(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate_cohorts(tmp_path, **kwargs)


def test_cli_simulate(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--quiet", "imaging", "simulate", "--out", str(tmp_path), "--scale", "0.01"]
    )
    assert result.exit_code == 0, result.output
    manifest = pd.read_csv(tmp_path / "manifest.csv")
    assert manifest["patient_id"].nunique() == 12  # at least four per cohort
    assert manifest["simulated"].all()
