"""IBSI 1 phantoms as the executable specification of our radiomics settings.

Every configuration (digital phantom, CT A-E) runs once per engine in this module
(``conformance``, module-scoped and marked slow: the MIRP runs take most of the time) and the
tests pin what irtscope achieves today, per configuration and engine (``PINNED``): a drop in
computed or in-tolerance features fails CI. Known failures are documented definition
differences: pyradiomics' PCA axes on the digital phantom (covariance normalised by N, IBSI by
N - 1) and MIRP's approximated Moran's I / Geary's C on the CT phantom (the exact computation is
O(n^2) in the ROI voxels). The C-E reference values are read from
``tests/imaging/data/ibsi1_reference_values`` (IBSI consensus tables, source in each header).
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
from irtscope.imaging._ibsi import IBSI_CONFIGS, reference_table
from irtscope.imaging._ibsi_conformance import Conformance, conformance_tables, ibsi_conformance

REPO_ROOT = Path(__file__).resolve().parents[2]
CDE = REPO_ROOT / "tests" / "imaging" / "data" / "ibsi1_reference_values"

#: (configuration, engine) -> (computed, in tolerance) measured today; tests require at least
#: as many of both.
PINNED: dict[tuple[str, str], tuple[int, int]] = {
    ("digital", "pyradiomics"): (266, 264),
    ("A", "pyradiomics"): (209, 209),
    ("B", "pyradiomics"): (209, 209),
    ("C", "pyradiomics"): (209, 209),
    ("D", "pyradiomics"): (209, 209),
    ("E", "pyradiomics"): (209, 209),
    ("digital", "mirp"): (482, 482),
    ("A", "mirp"): (346, 344),
    ("B", "mirp"): (346, 344),
    ("C", "mirp"): (210, 208),
    ("D", "mirp"): (210, 208),
    ("E", "mirp"): (210, 208),
}


@pytest.fixture(scope="module")
def refs(imaging_dir: Path) -> Path:
    return imaging_dir / "ibsi1_reference_values"


@pytest.fixture(scope="module")
def ct_phantom(imaging_dir: Path) -> Path:
    return imaging_dir / "ibsi1_ct_phantom"


@pytest.fixture(scope="module")
def conformance(imaging_dir: Path) -> Conformance:
    """Every configuration with every engine, once for the whole module."""
    return ibsi_conformance(imaging_dir, project_root=REPO_ROOT, n_workers=2)


@pytest.fixture(scope="module")
def table_a(conformance: Conformance) -> pd.DataFrame:
    return conformance.tables[("A", "pyradiomics")]


def _share(table: pd.DataFrame) -> tuple[int, int]:
    computed = table[table["status"].isin(["pass", "fail"])]
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
    for path in (
        refs / "ibsi_1_dig_phantom.csv",
        refs / "ibsi_1_chest_config_a.csv",
        refs / "ibsi_1_chest_config_b.csv",
        CDE / "ibsi_1_chest_config_c.csv",
        CDE / "ibsi_1_chest_config_d.csv",
        CDE / "ibsi_1_chest_config_e.csv",
    ):
        with path.open() as handle:
            lines = (line for line in handle if not line.startswith("#"))
            tags = {r["tag"] for r in csv.DictReader(lines, delimiter=";")}
        assert tags <= set(mapping["tag"]), path.name


@pytest.mark.slow
def test_digital_phantom(conformance: Conformance) -> None:
    table = conformance.tables[("digital", "pyradiomics")]
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


@pytest.mark.slow
def test_ct_config_a(table_a: pd.DataFrame) -> None:
    passed, computed = _share(table_a)
    assert computed >= 200 and passed == computed
    row = table_a.set_index("tag").loc["int_mask_vox_count_init_roi"]
    assert row["ours"] == 125256


@pytest.mark.slow
def test_ct_config_b(conformance: Conformance) -> None:
    table = conformance.tables[("B", "pyradiomics")]
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


@pytest.mark.slow
def test_every_configuration_and_engine_is_pinned(conformance: Conformance) -> None:
    summary = conformance.summary.set_index(["config", "engine"])
    for (config, engine), (computed, passed) in PINNED.items():
        row = summary.loc[(config, engine)]
        assert row["computed"] >= computed, (config, engine, row["computed"])
        assert row["in_tolerance"] >= passed, (config, engine, row["in_tolerance"])
        assert row["pass_share"] >= 0.95, (config, engine)
    # acceptance: >= 90 % of the reference tags computed by at least one engine, everywhere
    anyone = conformance.summary[conformance.summary["engine"] == "any engine"]
    assert list(anyone["config"]) == ["digital", "A", "B", "C", "D", "E"]
    assert (anyone["coverage"] >= 0.9).all(), anyone


@pytest.mark.slow
def test_configurations_c_d_e_with_pyradiomics(conformance: Conformance) -> None:
    """The three fixes: IBSI bin origin (C), range + outlier re-segmentation (E)."""
    c = conformance.tables[("C", "pyradiomics")].set_index("tag")
    for tag in ("cm_joint_avg_3D_avg", "rlm_lgre_3D_avg", "szm_hgze_3D", "ngt_busyness_3D"):
        assert c.loc[tag, "status"] == "pass", tag  # shifted by two bins before the fix
    e = conformance.tables[("E", "pyradiomics")].set_index("tag")
    assert e.loc["int_mask_max_int_reseg_roi", "ours"] == pytest.approx(345, abs=9)
    assert e.loc["int_mask_min_int_reseg_roi", "status"] == "pass"
    assert e.loc["stat_max", "status"] == "pass"
    d = conformance.tables[("D", "pyradiomics")].set_index("tag")
    assert d.loc["int_mask_vox_count_reseg_roi", "status"] == "pass"


@pytest.mark.slow
def test_mirp_fills_what_pyradiomics_lacks(conformance: Conformance) -> None:
    missing = conformance.not_computed
    py_c = set(missing[(missing["config"] == "C") & (missing["engine"] == "pyradiomics")]["tag"])
    mirp_c = set(missing[(missing["config"] == "C") & (missing["engine"] == "mirp")]["tag"])
    assert {"dzm_sde_3D", "ivh_v10", "loc_peak_glob", "morph_vol_dens_aabb"} <= py_c
    assert not {"dzm_sde_3D", "ivh_v10", "loc_peak_glob", "morph_vol_dens_aabb"} & mirp_c
    # what MIRP leaves out are processing-stage diagnostics, which pyradiomics reports
    assert all(not t.startswith(("cm_", "rlm_", "szm_", "dzm_", "ngl_")) for t in mirp_c)
    a = conformance.tables[("A", "mirp")].set_index("tag")
    assert a.loc["cm_joint_max_2D_avg", "status"] == "pass"  # IBSI's per-slice aggregation
    failed = set(a.index[a["status"] == "fail"])
    assert failed <= {"morph_moran_i", "morph_geary_c"}
    families = conformance.families
    row = families[
        (families["config"] == "C")
        & (families["engine"] == "mirp")
        & (families["family"] == "GLDZM")
    ].iloc[0]
    assert row["computed"] == row["in_tolerance"] == 16


@pytest.mark.slow
def test_conformance_tables_are_written(conformance: Conformance, tmp_path: Path) -> None:
    files = conformance.write(tmp_path)
    summary = pd.read_csv(files["summary"])
    assert len(summary) == 18  # 6 configurations x (2 engines + "any engine")
    markdown = (tmp_path / "ibsi_conformance.md").read_text()
    assert "any engine" in markdown and "| config" in markdown
    assert (tmp_path / "ibsi_families.csv").is_file()
    assert (tmp_path / "ibsi_C_mirp.csv").is_file()
    not_computed = pd.read_csv(files["not_computed"])
    assert {"config", "engine", "tag", "family", "note"} <= set(not_computed.columns)


def test_conformance_counts_exclude_tags_without_consensus() -> None:
    table = pd.DataFrame(
        {
            "tag": ["stat_mean", "stat_var", "morph_vol_dens_ombb", "dzm_sde_3D"],
            "status": ["pass", "fail", "no reference", "not computed"],
            "note": ["", "", "", "not in pyradiomics"],
        }
    )
    other = table.assign(status=["pass", "pass", "no reference", "pass"])
    result = conformance_tables({("C", "pyradiomics"): table, ("C", "mirp"): other})
    rows = result.summary.set_index("engine")
    assert rows.loc["pyradiomics", "reference_tags"] == 3
    assert rows.loc["pyradiomics", "computed"] == 2
    assert rows.loc["pyradiomics", "pass_share"] == 0.5
    assert rows.loc["any engine", "coverage"] == 1.0
    assert rows.loc["any engine", "in_tolerance"] == 3
    assert list(result.not_computed["tag"]) == ["dzm_sde_3D"]


@pytest.mark.slow
def test_dicom_rtstruct_and_nifti_phantoms_agree(
    ct_phantom: Path, refs: Path, table_a: pd.DataFrame
) -> None:
    dicom = ibsi_check("A", ct_phantom, refs / IBSI_CONFIGS["A"][1], source="dicom")
    nifti = table_a.set_index("tag")
    dicom = dicom.set_index("tag")
    assert dicom.loc["int_mask_vox_count_init_roi", "ours"] == 125256
    computed = nifti.index[nifti["status"].isin(["pass", "fail"])]
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


@pytest.mark.slow
def test_cli_ibsi_check_all(
    imaging_dir: Path, tmp_path: Path, conformance: Conformance, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--all`` writes the conformance table; the module's runs stand in for the slow part."""
    import irtscope.imaging._ibsi_conformance as module

    monkeypatch.setattr(module, "ibsi_conformance", lambda *a, **k: conformance)
    agreement = pd.DataFrame(
        [
            {
                "lesion_id": "lung1",
                "tag": "stat_mean",
                "family": "intensity statistics",
                "pyradiomics": -20.0,
                "mirp": -20.5,
                "rel_diff": 0.024,
                "note": "",
            }
        ]
    )
    monkeypatch.setattr(module, "engine_agreement", lambda *a, **k: agreement)
    result = CliRunner().invoke(
        app,
        ["imaging", "ibsi-check", "--all", "--data-dir", str(imaging_dir), "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "IBSI 1 conformance" in result.output and "conformance tables" in result.output
    assert "any engine" in (tmp_path / "ibsi_conformance.md").read_text()
    assert (tmp_path / "engine_agreement_summary.md").is_file()


def test_cli_ibsi_check_c_reads_the_project_reference(imaging_dir: Path) -> None:
    assert reference_table("C", imaging_dir, REPO_ROOT) == CDE / "ibsi_1_chest_config_c.csv"
    assert reference_table("A", imaging_dir, REPO_ROOT).parent == imaging_dir / (
        "ibsi1_reference_values"
    )
    for name in ("c", "d", "e"):
        text = (CDE / f"ibsi_1_chest_config_{name}.csv").read_text()
        assert "oncoray/mirp" in text and "Zwanenburg" in text  # the source is named
        table = pd.read_csv(CDE / f"ibsi_1_chest_config_{name}.csv", sep=";", comment="#")
        assert list(table.columns) == ["reference value", "tolerance", "tag"]
        assert len(table) == 275 and table["tag"].is_unique
