"""Feature extraction over a manifest: the two shared lung CTs, cache, failures, Dask."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from irtscope import ConfigError, DataError, GeometryError
from irtscope.cli import app
from irtscope.imaging import compute_features, extract_features, load_manifest, load_params


@pytest.fixture(scope="module")
def lung_dir(imaging_dir: Path) -> Path:
    return imaging_dir / "pyradiomics_lung"


def _manifest(lung_dir: Path, folder: Path, extra: list[dict] | None = None) -> Path:
    rows = [
        {
            "patient_id": f"P{i}",
            "lesion_id": f"L{i}",
            "cohort": "pyradiomics",
            "image_path": str(lung_dir / f"lung{i}_image.nrrd"),
            "mask_path": str(lung_dir / f"lung{i}_label.nrrd"),
        }
        for i in (1, 2)
    ]
    path = folder / "manifest.csv"
    pd.DataFrame(rows + (extra or [])).to_csv(path, index=False)
    return path


def test_two_lung_cts_then_cached_rerun(lung_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(lung_dir, tmp_path))
    calls: list[int] = []
    first = extract_features(
        manifest,
        "lung-ct",
        cache_dir=tmp_path / "cache",
        progress=lambda a, t=None, d="": calls.append(a),
    )
    assert first.failures.empty
    assert list(first.features["lesion_id"]) == ["L1", "L2"]
    assert list(first.features.columns[:3]) == ["lesion_id", "patient_id", "cohort"]
    values = first.features.drop(columns=["lesion_id", "patient_id", "cohort"])
    assert values.shape[1] > 100
    assert all(c.startswith("original_") for c in values.columns)
    assert np.isfinite(values.to_numpy(dtype=float)).all()
    # lung2's lesion is much larger than lung1's (24,644 vs 837 voxels at 0.6 x 0.6 x 5 mm)
    volume = first.features.set_index("lesion_id")["original_shape_VoxelVolume"]
    assert volume["L2"] > 10 * volume["L1"]
    assert (first.n_computed, first.n_cached) == (2, 0)
    assert sum(calls) == 2

    second = extract_features(manifest, "lung-ct", cache_dir=tmp_path / "cache")
    assert (second.n_computed, second.n_cached) == (0, 2)
    pd.testing.assert_frame_equal(first.features, second.features)

    # other parameters -> other cache key -> recomputed
    third = extract_features(manifest.iloc[:1], "ibsi-a", cache_dir=tmp_path / "cache")
    assert (third.n_computed, third.n_cached) == (1, 0)

    out = first.write(tmp_path / "out")
    assert pd.read_parquet(out).shape == first.features.shape
    assert (tmp_path / "out" / "extraction.json").is_file()


def _save_like(reference: sitk.Image, array: np.ndarray, path: Path, spacing=None) -> str:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.CopyInformation(reference)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return str(path)


def test_failing_lesions_are_reported_and_skipped(lung_dir: Path, tmp_path: Path) -> None:
    image = sitk.ReadImage(str(lung_dir / "lung1_image.nrrd"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(lung_dir / "lung1_label.nrrd")))
    empty = _save_like(image, np.zeros_like(mask), tmp_path / "empty.nrrd")
    shifted = _save_like(image, mask, tmp_path / "other_grid.nrrd", spacing=(1.0, 1.0, 5.0))
    broken = [
        {
            "patient_id": "P3",
            "lesion_id": "EMPTY",
            "cohort": "x",
            "image_path": str(lung_dir / "lung1_image.nrrd"),
            "mask_path": empty,
        },
        {
            "patient_id": "P4",
            "lesion_id": "GRID",
            "cohort": "x",
            "image_path": str(lung_dir / "lung1_image.nrrd"),
            "mask_path": shifted,
        },
        {
            "patient_id": "P5",
            "lesion_id": "MISSING",
            "cohort": "x",
            "image_path": str(tmp_path / "nowhere.nrrd"),
            "mask_path": empty,
        },
    ]
    manifest = load_manifest(_manifest(lung_dir, tmp_path, broken), check_files=False)
    result = extract_features(manifest, "lung-ct", cache_dir=tmp_path / "cache")
    assert list(result.features["lesion_id"]) == ["L1", "L2"]
    errors = result.failures.set_index("lesion_id")["error"]
    assert set(errors.index) == {"EMPTY", "GRID", "MISSING"}
    assert "Geometry" in errors["EMPTY"] and "empty" in errors["EMPTY"]
    assert "Geometry" in errors["GRID"] and "spacing" in errors["GRID"]
    assert "MISSING" in errors["MISSING"] and "nowhere.nrrd" in errors["MISSING"]
    # failures are not cached: only the two good lesions are
    assert len(list((tmp_path / "cache").rglob("*.parquet"))) == 2


def test_compute_features_checks_geometry_and_empty_masks(lung_dir: Path) -> None:
    image = sitk.ReadImage(str(lung_dir / "lung1_image.nrrd"))
    mask = sitk.ReadImage(str(lung_dir / "lung1_label.nrrd"))
    with pytest.raises(GeometryError, match="empty"):
        compute_features(image, mask * 0, "lung-ct")
    other = sitk.Image(mask)
    other.SetOrigin([o + 7.0 for o in mask.GetOrigin()])
    with pytest.raises(GeometryError, match="origin"):
        compute_features(image, other, "lung-ct")
    cropped = mask[:-1, :, :]
    with pytest.raises(GeometryError, match="size"):
        compute_features(image, cropped, "lung-ct")


def test_manifest_problems(lung_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(lung_dir, tmp_path))
    with pytest.raises(DataError, match="repeats lesion_id"):
        extract_features(pd.concat([manifest, manifest]), "lung-ct")
    with pytest.raises(ConfigError, match="not a preset"):
        extract_features(manifest, "no-such-preset")


def test_two_worker_processes_match_serial(lung_dir: Path, tmp_path: Path) -> None:
    replica = {
        "patient_id": "P3",
        "lesion_id": "L3",
        "cohort": "pyradiomics",
        "image_path": str(lung_dir / "lung1_image.nrrd"),
        "mask_path": str(lung_dir / "lung1_label.nrrd"),
    }  # same content as L1: same cache key, but still its own task and row
    manifest = load_manifest(_manifest(lung_dir, tmp_path, [replica]))
    serial = extract_features(manifest, "ibsi-a")
    parallel = extract_features(manifest, "ibsi-a", n_workers=2, cache_dir=tmp_path / "cache")
    assert parallel.failures.empty and parallel.n_computed == 3
    assert list(parallel.features["lesion_id"]) == ["L1", "L2", "L3"]
    pd.testing.assert_frame_equal(serial.features, parallel.features)
    values = parallel.features.set_index("lesion_id").drop(columns=["patient_id"])
    assert values.loc["L1"].equals(values.loc["L3"])
    assert parallel.provenance["n_workers"] == 2


def test_cli_extract(lung_dir: Path, tmp_path: Path) -> None:
    manifest = _manifest(lung_dir, tmp_path)
    out = tmp_path / "out"
    args = ["imaging", "extract", "--manifest", str(manifest), "--out", str(out)]
    first = CliRunner().invoke(app, ["--quiet", *args])
    assert first.exit_code == 0, first.output
    assert pd.read_parquet(out / "features.parquet").shape[0] == 2
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "2 from cache" in second.output
    assert math.isfinite(pd.read_parquet(out / "features.parquet").iloc[0, 3])


def test_existing_scheduler_address(lung_dir: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    manifest = load_manifest(_manifest(lung_dir, tmp_path))
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    ) as cluster:
        result = extract_features(manifest.iloc[:1], "ibsi-a", scheduler=cluster.scheduler_address)
    assert result.failures.empty and result.n_computed == 1
    assert result.provenance["scheduler"].startswith(("tcp://", "inproc://"))


def test_interrupted_run_resumes(lung_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(_manifest(lung_dir, tmp_path))

    class Interrupt(Exception):
        pass

    def stop_after_first(advance: int, total: int | None = None, desc: str = "") -> None:
        if advance and desc == "radiomics":
            raise Interrupt  # the user pressed Ctrl-C after the first lesion finished

    with pytest.raises(Interrupt):
        extract_features(
            manifest, "ibsi-a", cache_dir=tmp_path / "cache", progress=stop_after_first
        )
    resumed = extract_features(manifest, "ibsi-a", cache_dir=tmp_path / "cache")
    assert (resumed.n_cached, resumed.n_computed) == (1, 1)
    assert list(resumed.features["lesion_id"]) == ["L1", "L2"]


def _run_main(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> int:
    """Run the console-script entry point (the one that turns IrtscopeError into one line)."""
    from irtscope.cli import main

    monkeypatch.setattr("sys.argv", ["irtscope", *args])
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli_extract_keeps_good_lesions_when_rows_are_bad(
    lung_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A missing file is one failed lesion, not a rejected manifest; the run keeps the rest."""
    image = sitk.ReadImage(str(lung_dir / "lung1_image.nrrd"))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(lung_dir / "lung1_label.nrrd")))
    empty = _save_like(image, np.zeros_like(mask), tmp_path / "empty.nrrd")
    grid = _save_like(image, mask, tmp_path / "other_grid.nrrd", spacing=(1.0, 1.0, 5.0))
    lung1 = str(lung_dir / "lung1_image.nrrd")
    broken = [
        {
            "patient_id": "P3",
            "lesion_id": "GONE[/x]",
            "cohort": "x",
            "image_path": str(tmp_path / "nowhere.nrrd"),
            "mask_path": empty,
        },
        {
            "patient_id": "P4",
            "lesion_id": "EMPTY",
            "cohort": "x",
            "image_path": lung1,
            "mask_path": empty,
        },
        {
            "patient_id": "P5",
            "lesion_id": "GRID",
            "cohort": "x",
            "image_path": lung1,
            "mask_path": grid,
        },
    ]
    manifest = _manifest(lung_dir, tmp_path, broken)
    out = tmp_path / "out"
    code = _run_main(
        monkeypatch, ["imaging", "extract", "--manifest", str(manifest), "--out", str(out)]
    )
    printed = " ".join(capsys.readouterr().out.split())  # undo the console's line wrapping
    assert code == 0
    assert list(pd.read_parquet(out / "features.parquet")["lesion_id"]) == ["L1", "L2"]
    failures = pd.read_csv(out / "failures.csv").set_index("lesion_id")["error"]
    assert list(failures.index) == ["GONE[/x]", "EMPTY", "GRID"]
    for lesion, error in failures.items():
        assert f"lesion {lesion!r}" in error and "\n" not in error
    assert "nowhere.nrrd" in failures["GONE[/x]"]
    assert "failed: DataError: lesion 'GONE[/x]'" in printed  # markup-like ids print verbatim

    # nothing extracted at all: exit code 1 and one error line
    only_bad = tmp_path / "bad" / "manifest.csv"
    only_bad.parent.mkdir()
    pd.read_csv(manifest).iloc[2:].to_csv(only_bad, index=False)
    code = _run_main(
        monkeypatch,
        [
            "--quiet",
            "imaging",
            "extract",
            "--manifest",
            str(only_bad),
            "--out",
            str(tmp_path / "out_bad"),
        ],
    )
    err = capsys.readouterr().err
    assert code == 1 and "no lesion" in err and "3 failed" in err
    assert (tmp_path / "out_bad" / "failures.csv").is_file()


@pytest.mark.slow
def test_cli_extract_with_the_mirp_engine_then_agreement(lung_dir: Path, tmp_path: Path) -> None:
    """engine: mirp through the normal extract command: Dask, cache, failures.csv, IBSI tags.

    2 mm instead of lung-ct's 1 mm keeps MIRP's run short; the same YAML then serves the
    cross-engine agreement, whose MIRP half comes from the extraction cache.
    """
    import yaml

    from irtscope.imaging import engine_agreement

    data = load_params("lung-ct").model_dump(by_alias=True)
    data["setting"]["resampledPixelSpacing"] = [2.0, 2.0, 2.0]
    params = tmp_path / "lung_2mm.yaml"
    params.write_text(yaml.safe_dump(data))
    broken = [
        {
            "lesion_id": "gone",
            "patient_id": "P9",
            "cohort": "A",
            "image_path": str(tmp_path / "missing.nrrd"),
            "mask_path": str(lung_dir / "lung1_label.nrrd"),
        }
    ]
    manifest = _manifest(lung_dir, tmp_path, broken)
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        "imaging",
        "extract",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--params",
        str(params),
        "--engine",
        "mirp",
        "--workers",
        "2",
        "--cache-dir",
        str(cache),
    ]
    result = CliRunner().invoke(app, ["--quiet", *args])
    assert result.exit_code == 0, result.output
    features = pd.read_parquet(out / "features.parquet")
    assert list(features["lesion_id"]) == ["L1", "L2"]
    assert {"morph_volume", "stat_mean", "dzm_sde_3D", "ivh_v10", "cm_joint_avg_3D_avg"} <= set(
        features.columns
    )
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["lesion_id"]) == ["gone"]
    good = load_manifest(manifest, check_files=False).iloc[:2]
    agreement = engine_agreement(good, params, cache_dir=cache)
    assert set(agreement["lesion_id"]) == {"L1", "L2"}
    assert agreement["tag"].nunique() > 80 and (agreement["rel_diff"] >= 0).all()
    volume = agreement[agreement["tag"] == "morph_vol_approx"]["rel_diff"]
    assert (volume < 0.15).all()  # both engines see the same lesions
