"""Statistics and tableone-style tables built from small long-form frames."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from irtscope import DataError
from irtscope.trials._describe import (
    LandscapeData,
    chi_square_trend,
    cochran_armitage,
    explain_table,
    format_n_pct,
    ici_table,
    innovation_table,
    median_iqr,
    table1,
    table2,
    wilson_ci,
)
from irtscope.trials._published import comparison_table, load_published


def _frame(trials: list[dict]) -> pd.DataFrame:
    rows = []
    for t in trials:
        for variable, values in t.items():
            if variable == "nct_id":
                continue
            for value in values if isinstance(values, list) else [values]:
                rows.append({"nct_id": t["nct_id"], "variable": variable, "value": value})
    return pd.DataFrame(rows)


@pytest.fixture
def small() -> pd.DataFrame:
    # 6 trials: 1 in 2014-2017, 2 in 2018-2020, 3 in 2021-2024.
    spec = [
        ("NCT00000001", "2014-2017", "III", "yes", "40", ["stereotactic RT"], ["durvalumab"]),
        ("NCT00000002", "2018-2020", "IV", "no", "120", [], ["pembrolizumab"]),
        ("NCT00000003", "2018-2020", "IV", "no", "60", ["stereotactic RT"], []),
        ("NCT00000004", "2021-2024", "IV", "no", "30", ["proton/heavy-ion therapy"], []),
        ("NCT00000005", "2021-2024", "III", "yes", "500", [], ["durvalumab", "ipilimumab"]),
        ("NCT00000006", "2021-2024", "not reported", "no", "10", ["stereotactic RT"], []),
    ]
    trials = [
        {
            "nct_id": nct,
            "period": period,
            "stage": stage,
            "has_results": res,
            "enrollment": enr,
            "rt_technology": tech,
            "ici_drug": drugs,
        }
        for nct, period, stage, res, enr, tech, drugs in spec
    ]
    return _frame(trials)


def test_wilson_matches_hand_computation() -> None:
    # Wilson 95% for 44/196: centre (p + z^2/2n)/(1 + z^2/n), half-width z*sqrt(...)/(1+z^2/n).
    z = 1.959963984540054
    n, x = 196, 44
    p = x / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    low, high = wilson_ci(x, n)
    assert low == pytest.approx(centre - half, abs=1e-9)
    assert high == pytest.approx(centre + half, abs=1e-9)
    assert wilson_ci(0, 10)[0] == 0.0
    assert all(math.isnan(v) for v in wilson_ci(0, 0))
    with pytest.raises(DataError):
        wilson_ci(5, 3)


def test_cochran_armitage_hand_value() -> None:
    # SRT by period in the reference study: 23/44, 24/62, 36/90 (scores 0, 1, 2).
    # p = 83/196; T = 96 - p*242 = -6.47959; Var = p(1-p)(422 - 242^2/196) = 30.0792
    # z = -1.18144, two-sided p = 0.23743 (computed by hand from the formula).
    z, p = cochran_armitage([23, 24, 36], [44, 62, 90])
    assert z == pytest.approx(-1.18144, abs=1e-4)
    assert p == pytest.approx(0.23743, abs=1e-4)


def test_cochran_armitage_agrees_with_linear_by_linear() -> None:
    # statsmodels' ordinal association test is the N-1 variant: z_lbl = z_ca * sqrt((N-1)/N).
    from statsmodels.stats.contingency_tables import Table

    counts, totals = [3, 10, 25], [40, 40, 40]
    z, _p = cochran_armitage(counts, totals)
    table = Table(np.array([[c, t - c] for c, t in zip(counts, totals, strict=True)]))
    result = table.test_ordinal_association(
        row_scores=np.array([0.0, 1.0, 2.0]), col_scores=np.array([1.0, 0.0])
    )
    n = sum(totals)
    assert result.zscore == pytest.approx(z * math.sqrt((n - 1) / n), rel=1e-9)
    assert z > 0  # a rising share gives a positive statistic


def test_cochran_armitage_degenerate() -> None:
    z, p = cochran_armitage([0, 0, 0], [5, 5, 5])
    assert math.isnan(z) and math.isnan(p)
    with pytest.raises(DataError):
        cochran_armitage([6], [5])


def test_chi_square_drops_empty_rows() -> None:
    from scipy.stats import chi2_contingency

    table = np.array([[10, 20, 30], [0, 0, 0], [20, 10, 5]])
    stat, p = chi_square_trend(table)
    expected = chi2_contingency(table[[0, 2]], correction=False)
    assert stat == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)
    assert math.isnan(chi_square_trend(np.array([[1, 2, 3]]))[1])


def test_median_iqr() -> None:
    assert median_iqr([10, 20, 30, 40, None, float("nan")]) == (25.0, 17.5, 32.5)
    assert all(math.isnan(v) for v in median_iqr([]))


def test_format_n_pct() -> None:
    assert format_n_pct(44, 196) == "44 (22.4)"
    assert format_n_pct(0, 0) == "0 (—)"


def test_table1_counts_and_layout(small: pd.DataFrame) -> None:
    before = small.copy()
    data = LandscapeData.from_classification(small)
    t1 = table1(data)
    pd.testing.assert_frame_equal(small, before)  # input unchanged
    assert list(t1.columns[:4]) == ["Variable", "Level", "n (%)", "95% CI"]
    assert "2021-2024 (n=3)" in t1.columns
    stage_iv = t1[(t1["variable"] == "stage") & (t1["value"] == "IV")].iloc[0]
    assert stage_iv["n (%)"] == "3 (50.0)"
    assert stage_iv["2018-2020 (n=2)"] == "2 (100.0)"
    assert stage_iv["2021-2024 (n=3)"] == "1 (33.3)"
    # Levels in vocabulary order, "not reported" last.
    assert list(t1.loc[t1["variable"] == "stage", "value"]) == ["III", "IV", "not reported"]
    # Stage has 3 levels -> chi-square p on its first row; results is binary -> Cochran-Armitage.
    stage_first = t1[t1["variable"] == "stage"].iloc[0]
    assert stage_first["Test"] == "chi-square" and stage_first["p"] != ""
    results_yes = t1[(t1["variable"] == "has_results") & (t1["value"] == "yes")].iloc[0]
    assert results_yes["Test"] == "Cochran-Armitage"
    assert results_yes["n (%)"] == "2 (33.3)"


def test_table2_enrollment_median(small: pd.DataFrame) -> None:
    t2 = table2(LandscapeData.from_classification(small))
    row = t2[t2["variable"] == "enrollment"].iloc[0]
    assert row["n (%)"] == "50 [32.5–105]"  # median of 10, 30, 40, 60, 120, 500
    assert row["2018-2020 (n=2)"] == "90 [75–105]"


def test_multivalued_rows_and_innovation(small: pd.DataFrame) -> None:
    data = LandscapeData.from_classification(small)
    ici = ici_table(data)
    durva = ici[(ici["variable"] == "ici_drug") & (ici["value"] == "durvalumab")].iloc[0]
    assert durva["n (%)"] == "2 (33.3)"
    assert durva["Test"] == "Cochran-Armitage"
    inn = innovation_table(data)
    tech_any = inn[(inn["variable"] == "rt_technology") & (inn["value"] == "any")].iloc[0]
    assert tech_any["n (%)"] == "4 (66.7)"  # union of SRT (3) and proton (1)
    srt = inn[(inn["variable"] == "rt_technology") & (inn["value"] == "stereotactic RT")].iloc[0]
    assert srt["n (%)"] == "3 (50.0)"
    dose_any = inn[(inn["variable"] == "rt_dose") & (inn["value"] == "any")].iloc[0]
    assert dose_any["n (%)"] == "0 (0.0)"


def test_explain_lists_ids_behind_each_cell(small: pd.DataFrame) -> None:
    data = LandscapeData.from_classification(small)
    ex = explain_table(data)
    cell = ex[
        (ex["table"] == "table1_general")
        & (ex["variable"] == "stage")
        & (ex["value"] == "IV")
        & (ex["column"] == "overall")
    ].iloc[0]
    assert cell["nct_ids"] == "NCT00000002;NCT00000003;NCT00000004"
    assert cell["n"] == 3 and cell["denominator"] == 6
    # every explain count equals the number of ids listed
    lengths = ex["nct_ids"].map(lambda s: len(s.split(";")) if s else 0)
    assert (lengths == ex["n"]).all()


def test_included_subset(small: pd.DataFrame) -> None:
    data = LandscapeData.from_classification(small, included=["NCT00000001", "NCT00000002"])
    assert data.n == 2
    assert table1(data).iloc[0]["n (%)"] == "2"


def test_missing_columns_raise() -> None:
    with pytest.raises(DataError, match="lacks columns"):
        LandscapeData.from_classification(pd.DataFrame({"nct_id": ["x"]}))


def test_published_rows_load_and_compare(small: pd.DataFrame) -> None:
    published = load_published("nsclc-irt")
    assert published.n_included == 196
    assert published.search_date == "2024-06-24"
    # Period rows add up to the published total; the flow telescopes to 196.
    periods = [r for r in published.rows if r.variable == "period"]
    assert sum(r.n for r in periods) == 196
    flow = published.flow
    excluded = sum(
        v for k, v in flow.items() if k not in ("entries_read", "unique_studies", "included")
    )
    assert flow["unique_studies"] - excluded == flow["included"] == 196
    data = LandscapeData.from_classification(small)
    table = comparison_table(published, data, "2025-12-01")
    assert len(table) == len(published.rows)
    row = table[(table["variable"] == "stage") & (table["value"] == "IV")].iloc[0]
    assert row["Published n (%)"] == "78 (39.8)"
    assert row["This snapshot n (%)"] == "3 (50.0)"
    assert row["Difference (pp)"] == "+10.2"
    assert set(table["Snapshot data timestamp"]) == {"2025-12-01"}
    srt = table[(table["value"] == "stereotactic RT") & (table["Period"] == "2014-2017")].iloc[0]
    assert srt["Published n (%)"] == "23 (52.3)"
    assert srt["This snapshot n (%)"] == "1 (100.0)"


def test_trend_drop_rule_keeps_only_categories_above_five() -> None:
    from irtscope.trials._figures import trend_categories, trends_figure

    rows = []
    # 10 trials per period; SRT in 6 trials of 2021-2024 (kept: > 5 in one period);
    # proton in 5 trials of every period (dropped: <= 5 in every period).
    for p_index, period in enumerate(("2014-2017", "2018-2020", "2021-2024")):
        for i in range(10):
            nct = f"NCT{p_index}{i:07d}"
            rows.append((nct, "period", period))
            if period == "2021-2024" and i < 6:
                rows.append((nct, "rt_technology", "stereotactic RT"))
            if i < 5:
                rows.append((nct, "rt_technology", "proton/heavy-ion therapy"))
    data = LandscapeData.from_classification(
        pd.DataFrame(rows, columns=["nct_id", "variable", "value"])
    )
    kept, dropped = trend_categories(data, "sub")
    assert [value for _v, value, _l in kept] == ["stereotactic RT"]
    assert ("rt_technology", "proton/heavy-ion therapy", "proton/heavy-ion therapy") in dropped
    kept_major, _ = trend_categories(data, "major")
    assert [v for v, _value, _l in kept_major] == ["rt_technology"]
    fig = trends_figure(data, "sub")
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["stereotactic RT"]
