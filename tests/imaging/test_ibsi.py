"""IBSI 1 phantoms as the executable specification of our radiomics settings.

Pass shares asserted here are what irtscope + pyradiomics achieve today (digital phantom
264/266, CT configurations A and B: every computed value). A drop means a preset, the
tag mapping or pyradiomics changed; the two digital-phantom failures are a documented
pyradiomics definition difference (PCA axes, covariance normalised by N instead of N - 1).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from irtscope import ConfigError, DataError
from irtscope.cli import app
from irtscope.imaging import ibsi_check, ibsi_feature_map, ibsi_pass_share, load_params
from irtscope.imaging._ibsi import IBSI_CONFIGS


@pytest.fixture(scope="module")
def refs(imaging_dir: Path) -> Path:
    return imaging_dir / "ibsi1_reference_values"


@pytest.fixture(scope="module")
def ct_phantom(imaging_dir: Path) -> Path:
    return imaging_dir / "ibsi1_ct_phantom"


@pytest.fixture(scope="module")
def table_a(ct_phantom: Path, refs: Path) -> pd.DataFrame:
    return ibsi_check("A", ct_phantom, refs / IBSI_CONFIGS["A"][1], source="nifti")


def _share(table: pd.DataFrame) -> tuple[int, int]:
    computed = table[table["status"] != "not computed"]
    return int((computed["status"] == "pass").sum()), len(computed)


def test_feature_map_covers_every_reference_tag(refs: Path) -> None:
    from radiomics import getFeatureClasses

    mapping = ibsi_feature_map()
    assert mapping["tag"].is_unique
    names = {
        f"{cls}_{name}" for cls, fc in getFeatureClasses().items() for name in fc.getFeatureNames()
    }
    for row in mapping.itertuples(index=False):
        if row.feature and not row.feature.startswith("diagnostics_"):
            assert row.feature in names, row.tag
        # every tag is either mapped or says why it is not computed
        assert row.feature or row.note, row.tag
    for name in (
        "ibsi_1_dig_phantom.csv",
        "ibsi_1_chest_config_a.csv",
        "ibsi_1_chest_config_b.csv",
    ):
        with (refs / name).open() as handle:
            tags = {r["tag"] for r in csv.DictReader(handle, delimiter=";")}
        assert tags <= set(mapping["tag"]), name


def test_digital_phantom(imaging_dir: Path, refs: Path) -> None:
    table = ibsi_check(
        "digital", imaging_dir / "ibsi1_digital_phantom", refs / "ibsi_1_dig_phantom.csv"
    )
    assert list(table.columns) == [
        "tag",
        "feature",
        "ours",
        "reference",
        "tolerance",
        "status",
        "note",
    ]
    passed, computed = _share(table)
    assert computed >= 260
    assert passed / computed >= 0.99
    status = table.set_index("tag")["status"]
    for tag in (
        "morph_volume",
        "morph_sphericity",
        "stat_kurt",
        "stat_mean",
        "ih_entropy",
        "cm_joint_avg_3D_avg",
        "cm_joint_avg_3D_comb",
        "cm_contrast_2_5D_comb",
        "rlm_sre_3D_comb",
        "szm_sze_3D",
        "ngt_coarseness_3D",
        "ngl_dc_entr_3D",
    ):
        assert status[tag] == "pass", tag
    failed = set(table.loc[table["status"] == "fail", "tag"])
    assert failed <= {"morph_pca_maj_axis", "morph_pca_min_axis", "morph_pca_least_axis"}
    assert all("N - 1" in n for n in table.loc[table["status"] == "fail", "note"])
    # features pyradiomics lacks are listed as not computed, with a reason
    dzm = table[table["tag"].str.startswith("dzm_")]
    assert (dzm["status"] == "not computed").all() and dzm["ours"].isna().all()
    assert ibsi_pass_share(table) == pytest.approx(passed / computed)


def test_ct_config_a(table_a: pd.DataFrame) -> None:
    passed, computed = _share(table_a)
    assert computed >= 200 and passed == computed
    row = table_a.set_index("tag").loc["int_mask_vox_count_init_roi"]
    assert row["ours"] == 125256


def test_ct_config_b(ct_phantom: Path, refs: Path) -> None:
    table = ibsi_check("B", ct_phantom, refs / IBSI_CONFIGS["B"][1])
    passed, computed = _share(table)
    assert computed >= 200 and passed == computed
    status = table.set_index("tag")["status"]
    assert status["int_mask_vox_count_interp_roi"] == "pass"  # the IBSI grid and mask threshold
    assert status["cm_joint_max_2_5D_avg"] == "pass"


def test_pyradiomics_resampling_is_not_ibsi_b(ct_phantom: Path, refs: Path) -> None:
    """Why ibsi-b resamples with irtscope: pyradiomics' own resampling fails IBSI B."""
    b = load_params("ibsi-b")
    native = b.model_copy(
        update={"irtscope": b.irtscope.model_copy(update={"interpolation": None})}
    ).with_settings(resampledPixelSpacing=[2, 2, 0], interpolator="sitkLinear")
    table = ibsi_check("B", ct_phantom, refs / IBSI_CONFIGS["B"][1], params=native)
    passed, computed = _share(table)
    assert passed / computed < 0.7


def test_dicom_rtstruct_and_nifti_phantoms_agree(
    ct_phantom: Path, refs: Path, table_a: pd.DataFrame
) -> None:
    dicom = ibsi_check("A", ct_phantom, refs / IBSI_CONFIGS["A"][1], source="dicom")
    nifti = table_a.set_index("tag")
    dicom = dicom.set_index("tag")
    assert dicom.loc["int_mask_vox_count_init_roi", "ours"] == 125256
    computed = nifti.index[nifti["status"] != "not computed"]
    for tag in computed:
        ours_n, ours_d = nifti.loc[tag, "ours"], dicom.loc[tag, "ours"]
        tolerance = nifti.loc[tag, "tolerance"]
        assert math.isclose(ours_n, ours_d, rel_tol=1e-6, abs_tol=max(tolerance, 1e-6)), tag
    assert (dicom["status"] == nifti["status"]).all()


def test_unknown_config(ct_phantom: Path, refs: Path) -> None:
    with pytest.raises(ConfigError, match="digital or A-E"):
        ibsi_check("F", ct_phantom, refs / "ibsi_1_chest_config_a.csv")


def test_cli_ibsi_check_digital(imaging_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "digital.csv"
    result = CliRunner().invoke(
        app,
        [
            "imaging",
            "ibsi-check",
            "--phantom",
            "digital",
            "--data-dir",
            str(imaging_dir),
            "--show",
            "fail",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "IBSI digital:" in result.output and "computed features pass" in result.output
    assert "not computed" in result.output
    assert len(pd.read_csv(out)) > 400


def test_cli_ibsi_check_without_reference(
    imaging_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """C-E tables come from the project's tests/ folder: outside the project they are missing."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        app, ["imaging", "ibsi-check", "--config", "C", "--data-dir", str(imaging_dir)]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, DataError)
    assert "ibsi_1_chest_config_c.csv" in str(result.exception)
