"""Lesion CNN: patches, training, determinism, checkpoints, sklearn contract, grouped splits.

Everything runs on tiny NIfTI images generated in ``tmp_path`` (a bright, heterogeneous sphere
for progressive lesions, a smaller uniform one otherwise) with a 16^3 patch and a two-block
network, so the whole file trains in seconds on one CPU thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from sklearn.base import clone

from irtscope import ConfigError, GeometryError
from irtscope.imaging._deep import (
    DeepConfig,
    load_checkpoint,
    load_deep_config,
    save_checkpoint,
    train_lesion_cnn,
    validation_split,
)
from irtscope.imaging._deep_estimator import LateFusionClassifier, LesionCNNClassifier
from irtscope.imaging._patches import PatchSettings, extract_patch, lesion_patches

TINY = DeepConfig.preset("small").updated(
    patch={"size": 16, "spacing_mm": 3.0},
    channels=(4, 8),
    epochs=3,
    patience=2,
    batch_size=8,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _lesion_image(rng: np.random.Generator, progressive: bool) -> tuple[sitk.Image, sitk.Image]:
    shape = (16, 32, 32)  # z, y, x
    z, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centre = np.array([8, 16, 16]) + rng.integers(-2, 3, size=3)
    dist = np.sqrt(
        ((z - centre[0]) * 3.0) ** 2 + ((yy - centre[1]) * 1.5) ** 2 + ((xx - centre[2]) * 1.5) ** 2
    )
    radius = 9.0 if progressive else 6.0
    mask = (dist <= radius).astype(np.uint8)
    image = rng.normal(-800.0, 40.0, size=shape)
    lesion_hu = rng.normal(60.0, 80.0 if progressive else 10.0, size=shape)
    image = np.where(mask == 1, lesion_hu, image).astype(np.int16)
    img = sitk.GetImageFromArray(image)
    img.SetSpacing((1.5, 1.5, 3.0))
    img.SetOrigin((-24.0, -24.0, 10.0))
    msk = sitk.GetImageFromArray(mask)
    msk.CopyInformation(img)
    return img, msk


def _write_cohort(folder: Path, n_patients: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(2):
            progressive = bool((p + k) % 2)
            img, msk = _lesion_image(rng, progressive)
            lesion = f"P{p:02d}-L{k}"
            image_path = folder / f"{lesion}_ct.nii.gz"
            mask_path = folder / f"{lesion}_mask.nii.gz"
            sitk.WriteImage(img, str(image_path))
            sitk.WriteImage(msk, str(mask_path))
            rows.append(
                {
                    "patient_id": f"P{p:02d}",
                    "lesion_id": lesion,
                    "cohort": "TEST-SIM",
                    "image_path": str(image_path),
                    "mask_path": str(mask_path),
                    "pd": int(progressive),
                    "pdl1": float(rng.uniform(0, 100)),
                    "arm": "ICI" if p % 2 else "ICI+SBRT",
                    "simulated": True,
                }
            )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    return _write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def patches(cohort: pd.DataFrame) -> np.ndarray:
    return lesion_patches(cohort, TINY.patch).patches


# -- patches ----------------------------------------------------------------------------------
def test_patch_is_centred_windowed_and_padded_with_air(cohort: pd.DataFrame) -> None:
    row = cohort.iloc[1]
    img = sitk.ReadImage(row["image_path"])
    msk = sitk.ReadImage(row["mask_path"])
    settings = PatchSettings(size=32, spacing_mm=2.0, pad="air")
    patch = extract_patch(img, msk, settings)
    assert patch.shape == (2, 32, 32, 32)
    assert patch.dtype == np.float32
    assert patch[0].min() >= 0.0 and patch[0].max() <= 1.0
    # the mask's centre of mass sits at the patch centre (within a voxel)
    com = np.array(np.nonzero(patch[1])).mean(axis=1)
    np.testing.assert_allclose(com, [15.5, 15.5, 15.5], atol=1.0)
    # a 64 mm field of view overhangs the 48 mm scan in z: padding is air (0 after window)
    assert patch[0, 0].max() == 0.0


def test_patch_overhang_repeats_the_scan_edge_by_default(cohort: pd.DataFrame) -> None:
    """Outside the scan the default patch continues the nearest voxel instead of a black slab
    of air (which the CNN could learn as a cohort-dependent shortcut)."""
    row = cohort.iloc[1]
    msk = sitk.ReadImage(row["mask_path"])
    # an image whose value depends on z only: 16 slices from -900 to 0 HU
    ramp = np.broadcast_to(np.linspace(-900, 0, 16)[:, None, None], (16, 32, 32))
    img = sitk.GetImageFromArray(ramp.astype(np.float32))
    img.CopyInformation(msk)
    edge = extract_patch(img, msk, PatchSettings(size=32, spacing_mm=2.0))
    air = extract_patch(img, msk, PatchSettings(size=32, spacing_mm=2.0, pad="air"))
    window = lambda hu: (hu + 1000.0) / 1400.0  # noqa: E731
    # the first patch slices lie below the scan: air-padded they are 0, edge-padded they
    # repeat the first slice (-900 HU)
    assert air[0, 0].max() == 0.0
    np.testing.assert_allclose(edge[0, 0], window(-900.0), atol=1e-5)
    np.testing.assert_allclose(edge[0, -1], window(0.0), atol=1e-5)
    np.testing.assert_array_equal(edge[1], air[1])  # the mask channel is the same
    inside = np.abs(air[0] - edge[0]) < 1e-5
    assert 0.2 < inside.mean() < 1.0  # the two agree inside the scan, differ only outside
    # a patch that fits inside the scan is the same either way
    small = [PatchSettings(size=8, spacing_mm=1.5, pad=p) for p in ("edge", "air")]
    np.testing.assert_array_equal(*(extract_patch(img, msk, s) for s in small))


def test_patch_without_mask_channel_and_empty_mask(cohort: pd.DataFrame) -> None:
    row = cohort.iloc[0]
    img = sitk.ReadImage(row["image_path"])
    msk = sitk.ReadImage(row["mask_path"])
    patch = extract_patch(img, msk, PatchSettings(size=16, include_mask=False))
    assert patch.shape == (1, 16, 16, 16)
    with pytest.raises(GeometryError, match="empty"):
        extract_patch(img, msk * 0, PatchSettings(size=16), lesion="L-empty")


def test_patch_cache_is_keyed_by_content_and_settings(cohort: pd.DataFrame, tmp_path: Path) -> None:
    rows = cohort.iloc[:2]
    first = lesion_patches(rows, TINY.patch, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 2
    again = lesion_patches(rows, TINY.patch, cache_dir=tmp_path)
    np.testing.assert_array_equal(first.patches, again.patches)
    other = TINY.patch.model_copy(update={"hu_max": 200.0})
    lesion_patches(rows, other, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_patch_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        PatchSettings(size=20)
    with pytest.raises(ValueError, match="hu_max"):
        PatchSettings(hu_min=100, hu_max=0)


# -- configuration ----------------------------------------------------------------------------
def test_presets_and_yaml_config(tmp_path: Path) -> None:
    small, full = DeepConfig.preset("small"), DeepConfig.preset("full")
    assert small.patch.size == 32 and small.patch.spacing_mm == 2.0
    assert full.patch.size == 48 and full.epochs > small.epochs
    path = tmp_path / "deep.yaml"
    path.write_text("preset: small\nepochs: 2\npatch:\n  size: 24\n", encoding="utf-8")
    config = load_deep_config(path)
    assert config.epochs == 2 and config.patch.size == 24 and config.patch.spacing_mm == 2.0
    path.write_text("preset: small\nepoch: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="epoch"):
        load_deep_config(path)
    with pytest.raises(ConfigError, match="preset"):
        load_deep_config("medium")


# -- splits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_validation_split_keeps_patients_together(cohort: pd.DataFrame, seed: int) -> None:
    y = cohort["pd"].to_numpy()
    groups = cohort["patient_id"].to_numpy()
    train, val = validation_split(y, groups, 0.2, seed)
    assert set(groups[train]).isdisjoint(groups[val])
    assert len(train) + len(val) == len(y)
    assert set(y[val]) == {0, 1}


# -- training ---------------------------------------------------------------------------------
def test_training_is_deterministic_and_leaves_global_rng_alone(
    patches: np.ndarray, cohort: pd.DataFrame
) -> None:
    y = cohort["pd"].to_numpy()
    groups = cohort["patient_id"].to_numpy()
    before = torch.get_rng_state()
    a = train_lesion_cnn(patches, y, groups, TINY, device="cpu", random_state=7)
    b = train_lesion_cnn(patches, y, groups, TINY, device="cpu", random_state=7)
    assert torch.equal(before, torch.get_rng_state())
    assert 1 <= len(a.history) <= TINY.epochs
    assert 1 <= a.best_epoch <= len(a.history)
    np.testing.assert_array_equal(a.predict(patches), b.predict(patches))
    c = train_lesion_cnn(patches, y, groups, TINY, device="cpu", random_state=8)
    assert not np.array_equal(a.predict(patches), c.predict(patches))


def test_checkpoint_round_trip_gives_identical_predictions(
    patches: np.ndarray, cohort: pd.DataFrame, tmp_path: Path
) -> None:
    model = LesionCNNClassifier(config=TINY, device="cpu", random_state=0)
    model.fit(patches, cohort["pd"], groups=cohort["patient_id"])
    path = model.save(tmp_path / "model.pt")
    loaded = LesionCNNClassifier.load(path, device="cpu")
    assert loaded.config_ == TINY
    np.testing.assert_array_equal(model.predict_proba(patches), loaded.predict_proba(patches))
    trained = load_checkpoint(save_checkpoint(model.trained_, tmp_path / "again.pt"), "cpu")
    assert trained.history == model.history_


def test_resnet_architecture_trains_one_epoch(patches: np.ndarray, cohort: pd.DataFrame) -> None:
    config = TINY.updated(architecture="resnet10", epochs=1)
    trained = train_lesion_cnn(
        patches, cohort["pd"].to_numpy(), cohort["patient_id"].to_numpy(), config, "cpu", 0
    )
    p = trained.predict(patches[:3])
    assert p.shape == (3,) and np.all((p >= 0) & (p <= 1))


def test_sampler_balance_and_no_augmentation(patches: np.ndarray, cohort: pd.DataFrame) -> None:
    config = TINY.updated(balance="sampler", augment={"enabled": False}, epochs=1, norm="group")
    trained = train_lesion_cnn(
        patches, cohort["pd"].to_numpy(), cohort["patient_id"].to_numpy(), config, "cpu", 1
    )
    assert len(trained.history) == 1


# -- sklearn contract -------------------------------------------------------------------------
def test_get_params_and_clone() -> None:
    model = LesionCNNClassifier(config="small", device="cpu", random_state=3)
    assert model.get_params() == {
        "config": "small",
        "device": "cpu",
        "random_state": 3,
        "cache_dir": None,
    }
    twin = clone(model.set_params(config=TINY))
    assert twin.get_params()["config"] == TINY and twin is not model
    assert not hasattr(twin, "trained_")
    with pytest.raises(ConfigError):
        LesionCNNClassifier(config="nope").fit(np.zeros((4, 2, 16, 16, 16)), [0, 1, 0, 1])


def test_grouped_cv_on_manifest_frames(cohort: pd.DataFrame, tmp_path: Path) -> None:
    from irtscope.imaging._evaluate import grouped_cv_predict, grouped_splits

    y = cohort["pd"].to_numpy()
    groups = cohort["patient_id"].to_numpy()
    for train, test in grouped_splits(y, groups, n_splits=3, random_state=0):
        assert set(groups[train]).isdisjoint(groups[test])
    model = LesionCNNClassifier(
        config=TINY.updated(epochs=1), device="cpu", random_state=0, cache_dir=tmp_path
    )
    scores = grouped_cv_predict(model, cohort, y, groups, n_splits=3, random_state=0)
    assert scores.shape == (len(cohort),) and np.all((scores >= 0) & (scores <= 1))
    assert len(list(tmp_path.glob("*.npy"))) == len(cohort)  # one cache entry per lesion


def test_late_fusion_with_precomputed_deep_score(cohort: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    y = cohort["pd"].to_numpy()
    frame = cohort.assign(
        deep_score=np.clip(0.5 * y + rng.uniform(0, 0.5, len(y)), 0, 1),
        original_firstorder_Mean=rng.normal(size=len(y)) + y,
        original_shape_Sphericity=rng.normal(size=len(y)),
    )
    fusion = LateFusionClassifier(deep_score_column="deep_score", cv=3, random_state=0)
    fusion.fit(frame, y)
    proba = fusion.predict_proba(frame)
    assert proba.shape == (len(y), 2)
    assert fusion.features_ == ["original_firstorder_Mean", "original_shape_Sphericity"]
    again = clone(fusion).fit(frame, y).predict_proba(frame)
    np.testing.assert_array_equal(proba, again)


# -- CLI on the simulated cohorts ---------------------------------------------------------------
@pytest.mark.slow
def test_train_deep_cli_on_simulated_cohorts(tmp_path: Path) -> None:
    """Small preset (2 epochs) on a tiny simulated DEV cohort, scored on both externals."""
    from typer.testing import CliRunner

    from irtscope.cli import app
    from irtscope.imaging._simulate import simulate_cohorts

    manifest_path = simulate_cohorts(tmp_path / "sim", seed=0, scale=0.1)
    manifest = pd.read_csv(manifest_path)
    # Test-only stand-in for features.parquet (pyradiomics is too slow for this test): two
    # noisy copies of the simulator's ground truth, named like pyradiomics columns.
    rng = np.random.default_rng(0)
    features = manifest[["lesion_id", "patient_id", "cohort"]].assign(
        original_shape_MeshVolume=manifest["true_volume_ml"] + rng.normal(0, 1, len(manifest)),
        original_firstorder_StandardDeviation=manifest["true_heterogeneity_hu"]
        + rng.normal(0, 5, len(manifest)),
    )
    features.to_parquet(tmp_path / "features.parquet")
    config = tmp_path / "deep.yaml"
    config.write_text("preset: small\nepochs: 2\npatience: 1\n", encoding="utf-8")
    out = tmp_path / "out"
    args = [
        "imaging", "train-deep", "--manifest", str(manifest_path), "--features",
        str(tmp_path / "features.parquet"), "--config", str(config), "--out", str(out),
        "--device", "cpu", "--n-splits", "3", "--n-boot", "50", "--threads", "1",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    comparison = pd.read_csv(out / "deep_vs_radiomics.csv")
    assert list(comparison["cohort"]) == ["DEV-SIM", "EXT1-SIM", "EXT2-SIM"]
    assert comparison["lesions"].sum() == len(manifest)
    for model in ("deep", "radiomics", "fusion"):
        assert comparison[f"{model}_auc"].between(0, 1).all()
    assert comparison["delong_p_deep_vs_radiomics"].between(0, 1).all()
    scores = pd.read_csv(out / "deep_scores.csv")
    assert scores["deep"].notna().all()
    assert scores["data"].eq("SIMULATED").all() and comparison["data"].eq("SIMULATED").all()
    assert "SIMULATED data" in result.output
    section = (out / "deep_section.html").read_text(encoding="utf-8")
    assert "SIMULATED DATA" in section and "data:image/png;base64," in section
    from irtscope.imaging._deep_report import deep_section_from_outputs

    rebuilt = deep_section_from_outputs(out)
    assert "DEV-SIM" in rebuilt["html"] and len(rebuilt["figures"]) == 1
    loaded = LesionCNNClassifier.load(out / "lesion_cnn.pt", device="cpu")
    assert loaded.config_.patch.size == 32 and loaded.config_.epochs == 2


def test_late_fusion_trains_the_cnn_out_of_fold(cohort: pd.DataFrame, tmp_path: Path) -> None:
    y = cohort["pd"].to_numpy()
    frame = cohort.assign(original_firstorder_Mean=np.random.default_rng(1).normal(size=len(y)))
    deep = LesionCNNClassifier(config=TINY.updated(epochs=1), device="cpu", cache_dir=tmp_path)
    fusion = LateFusionClassifier(deep=deep, cv=2, random_state=0).fit(frame, y)
    assert fusion.deep_ is not None and fusion.deep_ is not deep
    assert fusion.predict(frame).shape == (len(y),)


@pytest.mark.parametrize("method", ["gradcam", "occlusion"])
def test_saliency_maps_and_figure(patches: np.ndarray, cohort: pd.DataFrame, method: str) -> None:
    from irtscope.imaging._saliency import (
        saliency_figure,
        saliency_maps,
        select_saliency_lesions,
    )

    y = cohort["pd"].to_numpy()
    config = TINY.updated(epochs=1)
    trained = train_lesion_cnn(patches, y, cohort["patient_id"].to_numpy(), config, "cpu", 0)
    chosen = select_saliency_lesions(y, trained.predict(patches), n=2)
    assert sorted(y[chosen].tolist()) == [0, 1]
    maps = saliency_maps(trained, patches[chosen], method=method)
    assert maps.shape == (2, 16, 16, 16)
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    fig = saliency_figure(patches[chosen], maps, ["a", "b"], spacing_mm=3.0, suptitle="SIMULATED")
    assert fig.get_suptitle() == "SIMULATED"
    assert len(fig.axes) == 6


class _SpyCNN:
    """Stand-in CNN whose score names the model, so a test can tell who saw which patient."""

    trained_on: dict[float, frozenset[str]] = {}  # noqa: RUF012 - test registry

    def __init__(self, config=None, device="cpu", random_state=None, cache_dir=None) -> None:
        self.config, self.device = config, device
        self.random_state, self.cache_dir = random_state, cache_dir

    def get_params(self, deep: bool = True) -> dict:
        return {"config": self.config, "device": self.device,
                "random_state": self.random_state, "cache_dir": self.cache_dir}

    def fit(self, X, y, groups=None) -> _SpyCNN:
        from types import SimpleNamespace

        self.classes_ = np.array([0, 1])
        self.code_ = 0.1 + 0.001 * len(self.trained_on)
        self.trained_on[self.code_] = frozenset(map(str, groups))
        self.history_, self.trained_ = [], SimpleNamespace(device="cpu")
        return self

    def predict_proba(self, X) -> np.ndarray:
        p = np.full(len(X), self.code_)
        return np.column_stack([1 - p, p])


def test_late_fusion_cv_never_trains_on_scores_from_models_that_saw_the_test_fold(
    cohort: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Leak check: the combiner of an outer fold must not see CNN scores from models that were
    trained on that fold's test patients (reusing the outer-CV scores does exactly that)."""
    import irtscope.imaging._deep_report as deep_report
    from irtscope.imaging._deep_report import run_deep_study

    _SpyCNN.trained_on.clear()
    monkeypatch.setattr(deep_report, "LesionCNNClassifier", _SpyCNN)
    seen: list[tuple[set[str], pd.DataFrame]] = []
    original_fit = LateFusionClassifier.fit

    def spy_fit(self, X, y):
        seen.append((set(map(str, X["patient_id"])), X[["patient_id", "deep_score"]].copy()))
        return original_fit(self, X, y)

    monkeypatch.setattr(LateFusionClassifier, "fit", spy_fit)
    rng = np.random.default_rng(0)
    features = cohort[["lesion_id"]].assign(
        original_firstorder_Mean=rng.normal(size=len(cohort)) + cohort["pd"],
        original_shape_Sphericity=rng.normal(size=len(cohort)),
    )
    result = run_deep_study(
        cohort, features, TINY, dev_cohort="TEST-SIM", device="cpu", n_splits=3, n_boot=10,
        n_saliency=0,
    )
    assert result.scores["fusion"].between(0, 1).all()
    everyone = set(cohort["patient_id"])
    internal = [(train, x) for train, x in seen if train != everyone]
    assert len(internal) == 3  # one combiner per outer fold (+ the final fit on everyone)
    for train_patients, x in internal:
        test_patients = everyone - train_patients
        for code in x["deep_score"]:
            assert not (_SpyCNN.trained_on[code] & test_patients), "combiner saw a leaky score"
    assert result.simulated


def test_train_deep_cli_bad_inputs_are_one_line_errors(
    cohort: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from irtscope.cli import main

    manifest = tmp_path / "manifest.csv"
    pdl1 = cohort.groupby("patient_id")["pdl1"].transform("first")  # patient-level column
    cohort.assign(pdl1=pdl1).to_csv(manifest, index=False)
    bad_yaml = tmp_path / "deep.yaml"
    bad_yaml.write_text("preset: small\nepochz: 3\n", encoding="utf-8")
    base = ["irtscope", "--quiet", "imaging", "train-deep", "--manifest", str(manifest),
            "--out", str(tmp_path / "out"), "--dev-cohort", "TEST-SIM"]
    cases = [
        (["--features", str(tmp_path / "nope.parquet")], "features table"),
        (["--config", str(bad_yaml)], "deep.yaml"),
        (["--config", "huge"], "neither a preset"),
    ]
    for extra, expected in cases:
        monkeypatch.setattr("sys.argv", [*base, *extra])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 1 and expected in err and "Traceback" not in err
        assert err.startswith("error:")
    assert not (tmp_path / "out" / "lesion_cnn.pt").exists()  # nothing was trained
