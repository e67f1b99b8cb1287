"""Descriptive statistics and tableone-style tables of the included trials.

Everything here works on the classification contract's *long form* (one row per trial,
variable and value) reduced to sets of NCT ids, so that every number in a table is the size of
a set that can be listed (:func:`explain_table`): a reader can always ask "which trials are
behind this 31.1 %?".

Statistics follow the reference study and the issue: n (%) with a 95 % Wilson interval (better
coverage than the Wald interval for the small and extreme proportions a registry table is full
of), median [IQR] for continuous variables, and one trend test across registration periods per
row: Cochran-Armitage for binary rows, a chi-square test of the level x period table otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from irtscope._errors import DataError

__all__ = [
    "ANY_LEVEL",
    "INNOVATION_MAJORS",
    "PERIODS",
    "LandscapeData",
    "chi_square_trend",
    "cochran_armitage",
    "explain_table",
    "format_n_pct",
    "ici_table",
    "innovation_count_table",
    "innovation_table",
    "median_iqr",
    "table1",
    "table2",
    "wilson_ci",
]

#: Default registration periods (the protocol's cut points normally decide them).
PERIODS: tuple[str, ...] = ("2014-2017", "2018-2020", "2021-2024")

#: Level name of a major-category row: the trial has at least one subcategory.
ANY_LEVEL = "any"

#: The 8 innovation major categories (contract variables), their labels and side.
INNOVATION_MAJORS: dict[str, tuple[str, str]] = {
    "rt_technology": ("Technology", "treatment"),
    "rt_dose": ("Dose/fractionation", "treatment"),
    "rt_field": ("Radiation field", "treatment"),
    "rt_auxiliary": ("Auxiliary systems", "treatment"),
    "pop_metastatic_site": ("Metastatic site", "population"),
    "pop_primary_site": ("Primary tumour site", "population"),
    "pop_lymph_nodes": ("Lymph nodes", "population"),
    "pop_patient_status": ("Patient status", "population"),
}

#: Contract vocabulary, in the order the reference study lists levels.
VOCABULARY: dict[str, tuple[str, ...]] = {
    "period": PERIODS,
    "age_groups": (
        "adult+older adult",
        "child+adult+older adult",
        "older adult",
        "adult",
        "child",
        "child+adult",
    ),
    "stage": (
        "I",
        "I-II",
        "I-III",
        "II-III",
        "II-IV",
        "III",
        "III-IV",
        "IV",
        "oligoprogressive",
        "oligometastatic/oligoresidual",
        "oligometastatic/oligoprogressive",
        "brain/leptomeningeal metastasis",
        "not reported",
    ),
    "sponsor_type": (
        "hospital",
        "university",
        "research institution",
        "company",
        "oncology cooperative group",
        "foundation",
        "other",
    ),
    "funder_type": (
        "industry",
        "NIH",
        "network",
        "FED",
        "other gov",
        "individual",
        "other",
        "unknown",
    ),
    "region": (
        "North America",
        "Asia",
        "Europe",
        "Oceania",
        "South America",
        "Africa",
        "not reported",
    ),
    "multi_region": ("yes", "no"),
    "status": (
        "recruiting",
        "active not recruiting",
        "completed",
        "unknown",
        "not yet recruiting",
        "terminated",
        "withdrawn",
        "suspended",
        "enrolling by invitation",
    ),
    "has_results": ("yes", "no"),
    "why_stopped": (
        "slow accrual",
        "safety",
        "funding",
        "sponsor strategy",
        "protocol amendment",
        "work commitments",
        "competing study/delay",
        "other treatment efficacious",
        "previous results",
        "other",
    ),
    "phase": ("early 1", "1", "1/2", "2", "2/3", "3", "4", "NA"),
    "centres": ("single", "multi"),
    "enrollment_bin": ("<50", "50-99", "100-199", "200-499", ">=500"),
    "primary_purpose": (
        "treatment",
        "supportive care",
        "prevention",
        "diagnostic",
        "basic science",
        "screening",
        "health services research",
        "other",
    ),
    "allocation": ("randomised", "non-randomised", "NA"),
    "intervention_model": ("single group", "parallel", "sequential", "crossover", "factorial"),
    "masking": ("none", "single", "double", "triple", "quadruple"),
    "dmc": ("yes", "no"),
    "ici_drug": (
        "durvalumab",
        "pembrolizumab",
        "nivolumab",
        "atezolizumab",
        "ipilimumab",
        "tremelimumab",
        "camrelizumab",
        "sintilimab",
        "tislelizumab",
        "toripalimab",
        "avelumab",
        "cemiplimab",
    ),
    "ici_target": ("PD-1", "PD-L1", "CTLA-4"),
    "rt_technology": ("stereotactic RT", "image-guided RT", "proton/heavy-ion therapy"),
    "rt_dose": (
        "hypofractionated",
        "low-dose RT",
        "single fraction",
        "hyperfractionated",
        "hybrid dose-fraction",
        "other dose adjustment",
    ),
    "rt_field": ("residual lesion irradiation", "adaptive RT", "dose painting", "CTV omission"),
    "rt_auxiliary": ("decision-support system", "lung-function protection"),
    "pop_metastatic_site": (
        "oligometastatic/oligoprogressive/oligoresidual",
        "brain/leptomeningeal",
        "liver",
        "lung",
        "bone",
        "adrenal",
    ),
    "pop_primary_site": ("thoracic RT", "large-volume tumour", "superior sulcus"),
    "pop_lymph_nodes": ("nodal irradiation plan",),
    "pop_patient_status": (
        "PD-L1 status",
        "elderly",
        "residual lesions after immunotherapy",
        "lung function after immunotherapy",
        "stage after immunotherapy",
    ),
    "innovation_major_count": tuple(str(i) for i in range(9)),
}

#: Human labels of the contract variables (the "Variable" column).
VARIABLE_LABELS: dict[str, str] = {
    "period": "Registration period",
    "age_groups": "Age groups",
    "stage": "Tumour stage",
    "sponsor_type": "Sponsor type (lead sponsor)",
    "funder_type": "Funder type (registry class)",
    "region": "Region",
    "multi_region": "Multi-region",
    "status": "Recruitment status",
    "has_results": "Results posted",
    "why_stopped": "Why stopped (stopped trials with a reason)",
    "phase": "Phase",
    "centres": "Centres",
    "enrollment": "Enrollment, median [IQR]",
    "enrollment_bin": "Enrollment",
    "primary_purpose": "Primary purpose",
    "allocation": "Allocation",
    "intervention_model": "Intervention model",
    "masking": "Masking",
    "dmc": "Data monitoring committee",
    "ici_drug": "ICI drug",
    "ici_target": "ICI target",
    "innovation_major_count": "Innovation major categories per trial",
    **{var: label for var, (label, _side) in INNOVATION_MAJORS.items()},
}

TABLE1_VARIABLES: tuple[str, ...] = (
    "period",
    "age_groups",
    "stage",
    "sponsor_type",
    "funder_type",
    "region",
    "status",
    "has_results",
    "why_stopped",
)
TABLE2_VARIABLES: tuple[str, ...] = (
    "phase",
    "centres",
    "enrollment_bin",
    "primary_purpose",
    "allocation",
    "intervention_model",
    "masking",
    "dmc",
)
#: Variables where a trial may carry several values (rows are "share of trials with ...").
MULTI_VALUED: frozenset[str] = frozenset(
    {"country", "ici_drug", "ici_target", "why_stopped", *INNOVATION_MAJORS}
)
#: Variables whose denominator is the trials having any value (not all included trials).
CONDITIONAL: frozenset[str] = frozenset({"why_stopped"})


# --------------------------------------------------------------------------- statistics


def wilson_ci(count: int, total: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval of a proportion, as fractions in [0, 1].

    Registry tables are full of tiny counts (1 of 196) where the Wald interval collapses to
    zero width or leaves [0, 1]; Wilson keeps honest coverage there. ``(nan, nan)`` when the
    denominator is zero.
    """
    if total <= 0:
        return (math.nan, math.nan)
    if count < 0 or count > total:
        raise DataError(f"count {count} is outside 0..{total} for a proportion")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(count, total, alpha=alpha, method="wilson")
    return (max(0.0, float(low)), min(1.0, float(high)))


def median_iqr(values: Iterable[float]) -> tuple[float, float, float]:
    """Median and interquartile range (25th, 75th percentile; linear interpolation).

    NaN-valued entries (enrollment not reported) are dropped, not imputed.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return (math.nan, math.nan, math.nan)
    q25, q50, q75 = np.percentile(arr, [25, 50, 75])
    return (float(q50), float(q25), float(q75))


def cochran_armitage(
    counts: Sequence[int], totals: Sequence[int], scores: Sequence[float] | None = None
) -> tuple[float, float]:
    """Cochran-Armitage test for a linear trend of a proportion across ordered groups.

    Parameters
    ----------
    counts, totals
        Trials with the feature and all trials in each ordered group (period).
    scores
        Group scores; equally spaced ``0, 1, 2, ...`` by default (periods are ordered, not
        measured).

    Returns
    -------
    (z, p)
        The standardised statistic ``T / sqrt(Var T)`` (positive = rising share) and its
        two-sided normal p-value; ``(nan, nan)`` when the proportion is 0 or 1 everywhere, as
        there is then nothing to test.
    """
    x = np.asarray(counts, dtype=float)
    n = np.asarray(totals, dtype=float)
    s = np.arange(len(x), dtype=float) if scores is None else np.asarray(scores, dtype=float)
    if not (x.shape == n.shape == s.shape):
        raise DataError("cochran_armitage: counts, totals and scores must have the same length")
    if np.any(x < 0) or np.any(x > n):
        raise DataError("cochran_armitage: every count must lie between 0 and its total")
    big_n = n.sum()
    if big_n <= 0:
        return (math.nan, math.nan)
    p_bar = x.sum() / big_n
    stat = float(np.sum(s * (x - n * p_bar)))
    var = p_bar * (1 - p_bar) * (np.sum(n * s**2) - np.sum(n * s) ** 2 / big_n)
    if var <= 0:
        return (math.nan, math.nan)
    from scipy.stats import norm

    z = stat / math.sqrt(var)
    return (z, float(2 * norm.sf(abs(z))))


def chi_square_trend(table: np.ndarray | pd.DataFrame) -> tuple[float, float]:
    """Pearson chi-square test of a levels x periods count table.

    Empty rows and columns (a level nobody has, a period with no trial) are dropped first;
    ``(nan, nan)`` when fewer than two rows or columns remain.
    """
    arr = np.asarray(table, dtype=float)
    arr = arr[arr.sum(axis=1) > 0][:, arr.sum(axis=0) > 0] if arr.size else arr
    if arr.ndim != 2 or arr.shape[0] < 2 or arr.shape[1] < 2:
        return (math.nan, math.nan)
    from scipy.stats import chi2_contingency

    result = chi2_contingency(arr, correction=False)
    return (float(result.statistic), float(result.pvalue))


def format_n_pct(count: int, total: int, digits: int = 1) -> str:
    """``"44 (22.4)"``; ``"0 (—)"`` for an empty denominator."""
    if total <= 0:
        return f"{count} (—)"
    return f"{count} ({100 * count / total:.{digits}f})"


def _format_ci(low: float, high: float) -> str:
    if math.isnan(low):
        return "—"
    return f"{100 * low:.1f}–{100 * high:.1f}"


def _format_p(p: float) -> str:
    if p is None or math.isnan(p):
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


# --------------------------------------------------------------------------- data


@dataclass
class LandscapeData:
    """The included trials reduced to sets of NCT ids per (variable, value).

    Build it with :meth:`from_classification`; every table is computed from it, which keeps
    every cell traceable to the trials behind it.
    """

    ids: list[str]
    period_of: dict[str, str]
    periods: tuple[str, ...]
    members: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    enrollment: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_classification(
        cls,
        classification: pd.DataFrame,
        included: Iterable[str] | None = None,
        periods: Sequence[str] = PERIODS,
    ) -> LandscapeData:
        """Index a long-form classification frame (contract) for the ``included`` trials.

        Parameters
        ----------
        classification
            Columns ``nct_id``, ``variable``, ``value`` (others ignored). Not modified.
        included
            NCT ids to describe; default: every trial in ``classification``.
        periods
            Ordered period labels (the protocol's); trials in no listed period still count in
            the overall column.
        """
        missing = {"nct_id", "variable", "value"} - set(classification.columns)
        if missing:
            raise DataError(f"classification frame lacks columns {sorted(missing)}")
        frame = classification[["nct_id", "variable", "value"]].astype(str)
        ids = (
            sorted(set(included))
            if included is not None
            else sorted(frame["nct_id"].unique().tolist())
        )
        keep = set(ids)
        frame = frame[frame["nct_id"].isin(keep)].drop_duplicates()
        members: dict[str, dict[str, set[str]]] = {}
        for (variable, value), group in frame.groupby(["variable", "value"], sort=False):
            members.setdefault(str(variable), {})[str(value)] = set(group["nct_id"])
        period_of: dict[str, str] = {}
        for value, trials in members.get("period", {}).items():
            for nct in trials:
                period_of[nct] = value
        enrollment: dict[str, float] = {}
        for value, trials in members.get("enrollment", {}).items():
            try:
                number = float(value)
            except ValueError:
                continue
            for nct in trials:
                enrollment[nct] = number
        return cls(
            ids=ids,
            period_of=period_of,
            periods=tuple(periods),
            members=members,
            enrollment=enrollment,
        )

    @property
    def n(self) -> int:
        return len(self.ids)

    def period_ids(self, period: str) -> set[str]:
        return {nct for nct in self.ids if self.period_of.get(nct) == period}

    def levels(self, variable: str) -> list[str]:
        """Observed levels in vocabulary order, unknown ones after (sorted)."""
        observed = self.members.get(variable, {})
        vocab = VOCABULARY.get(variable, ())
        ordered = [v for v in vocab if v in observed]
        extra = sorted(v for v in observed if v not in vocab)
        if variable in ("registration_year", "innovation_major_count"):
            ordered = sorted(observed, key=lambda v: (len(v), v))
            extra = []
        return ordered + extra

    def with_value(self, variable: str, value: str) -> set[str]:
        if value == ANY_LEVEL:
            return set().union(*self.members.get(variable, {}).values())
        return set(self.members.get(variable, {}).get(value, set()))


@dataclass
class _Row:
    """One table row with its id sets (kept for explain tables)."""

    variable: str
    level: str
    ids: set[str]
    denominator: set[str]
    by_period: dict[str, tuple[set[str], set[str]]]
    p: float = math.nan
    test: str = ""
    label: str | None = None
    text: str | None = None  # preformatted value (continuous rows)
    by_period_text: dict[str, str] = field(default_factory=dict)


def _period_split(data: LandscapeData, ids: set[str], denominator: set[str]):
    out = {}
    for period in data.periods:
        in_period = data.period_ids(period) & denominator
        out[period] = (ids & in_period, in_period)
    return out


def _binary_trend(row: _Row) -> None:
    counts = [len(row.by_period[p][0]) for p in row.by_period]
    totals = [len(row.by_period[p][1]) for p in row.by_period]
    keep = [i for i, t in enumerate(totals) if t > 0]
    if len(keep) >= 2:
        _z, row.p = cochran_armitage([counts[i] for i in keep], [totals[i] for i in keep])
        row.test = "Cochran-Armitage"


def _categorical_rows(data: LandscapeData, variable: str) -> list[_Row]:
    everyone = set(data.ids)
    denominator = data.with_value(variable, ANY_LEVEL) if variable in CONDITIONAL else everyone
    rows = []
    for level in data.levels(variable):
        ids = data.with_value(variable, level) & denominator
        rows.append(_Row(variable, level, ids, denominator, _period_split(data, ids, denominator)))
    if not rows:
        return rows
    if variable in MULTI_VALUED or len(rows) == 2:
        # Binary per row: share of trials with this level, over ordered periods.
        targets = rows if variable in MULTI_VALUED else rows[:1]
        for row in targets:
            _binary_trend(row)
    else:
        table = np.array(
            [[len(row.by_period[p][0]) for p in data.periods] for row in rows], dtype=float
        )
        _stat, p = chi_square_trend(table)
        if not math.isnan(p):
            rows[0].p, rows[0].test = p, "chi-square"
    return rows


def _enrollment_row(data: LandscapeData) -> _Row:
    have = {nct for nct in data.ids if nct in data.enrollment}
    median, q1, q3 = median_iqr(data.enrollment[n] for n in sorted(have))
    row = _Row("enrollment", "median [IQR]", have, set(data.ids), _period_split(data, have, have))
    row.text = "—" if math.isnan(median) else f"{median:g} [{q1:g}–{q3:g}]"
    for period in data.periods:
        ids = have & data.period_ids(period)
        m, a, b = median_iqr(data.enrollment[n] for n in sorted(ids))
        row.by_period_text[period] = "—" if math.isnan(m) else f"{m:g} [{a:g}–{b:g}]"
    # Kruskal-Wallis across periods: the continuous counterpart of the trend tests.
    groups = [[data.enrollment[n] for n in have & data.period_ids(p)] for p in data.periods]
    groups = [g for g in groups if g]
    if len(groups) >= 2 and len({v for g in groups for v in g}) > 1:
        from scipy.stats import kruskal

        row.p, row.test = float(kruskal(*groups).pvalue), "Kruskal-Wallis"
    return row


def _format(rows: list[_Row], data: LandscapeData) -> pd.DataFrame:
    records = []
    for row in rows:
        n_total = len(row.denominator)
        record = {
            "Variable": row.label or VARIABLE_LABELS.get(row.variable, row.variable),
            "Level": row.level,
        }
        if row.text is not None:
            record["n (%)"] = row.text
            record["95% CI"] = ""
        else:
            record["n (%)"] = format_n_pct(len(row.ids), n_total)
            record["95% CI"] = _format_ci(*wilson_ci(len(row.ids), n_total))
        for period in data.periods:
            header = f"{period} (n={len(data.period_ids(period))})"
            if row.text is not None:
                record[header] = row.by_period_text[period]
            else:
                ids, denominator = row.by_period[period]
                record[header] = format_n_pct(len(ids), len(denominator))
        record["p"] = _format_p(row.p)
        record["Test"] = row.test
        record["variable"] = row.variable
        record["value"] = row.level
        records.append(record)
    columns = [
        "Variable",
        "Level",
        "n (%)",
        "95% CI",
        *(f"{p} (n={len(data.period_ids(p))})" for p in data.periods),
        "p",
        "Test",
        "variable",
        "value",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


# --------------------------------------------------------------------------- tables


def _header_row(data: LandscapeData) -> _Row:
    everyone = set(data.ids)
    row = _Row("n", "", everyone, everyone, _period_split(data, everyone, everyone))
    row.label = "Trials, n"
    row.text = str(len(everyone))
    row.by_period_text = {p: str(len(data.period_ids(p))) for p in data.periods}
    return row


def _rows_table1(data: LandscapeData) -> list[_Row]:
    rows = [_header_row(data)]
    for variable in TABLE1_VARIABLES:
        rows.extend(_categorical_rows(data, variable))
    return rows


def _rows_table2(data: LandscapeData) -> list[_Row]:
    rows = [_header_row(data)]
    for variable in TABLE2_VARIABLES:
        rows.extend(_categorical_rows(data, variable))
        if variable == "enrollment_bin":
            rows.append(_enrollment_row(data))
    return rows


def _rows_ici(data: LandscapeData) -> list[_Row]:
    rows = [_header_row(data)]
    for variable in ("ici_target", "ici_drug"):
        rows.extend(_categorical_rows(data, variable))
    return rows


def _rows_innovation(data: LandscapeData) -> list[_Row]:
    rows = [_header_row(data)]
    everyone = set(data.ids)
    for variable, (label, side) in INNOVATION_MAJORS.items():
        ids = data.with_value(variable, ANY_LEVEL)
        major = _Row(
            variable,
            ANY_LEVEL,
            ids,
            everyone,
            _period_split(data, ids, everyone),
            label=f"{label} ({side})",
        )
        _binary_trend(major)
        rows.append(major)
        for sub in _categorical_rows(data, variable):
            sub.label = f"{label} ({side})"
            rows.append(sub)
    return rows


def _rows_innovation_count(data: LandscapeData) -> list[_Row]:
    return [_header_row(data), *_categorical_rows(data, "innovation_major_count")]


_BUILDERS = {
    "table1_general": _rows_table1,
    "table2_design": _rows_table2,
    "ici": _rows_ici,
    "innovation": _rows_innovation,
    "innovation_points_per_trial": _rows_innovation_count,
}


def table1(data: LandscapeData) -> pd.DataFrame:
    """Table 1, general characteristics (the reference study's rows), overall and by period."""
    return _format(_rows_table1(data), data)


def table2(data: LandscapeData) -> pd.DataFrame:
    """Table 2, design characteristics, with enrollment also as median [IQR]."""
    return _format(_rows_table2(data), data)


def ici_table(data: LandscapeData) -> pd.DataFrame:
    """ICI targets and drugs named in the included trials (share of trials; multi-valued)."""
    return _format(_rows_ici(data), data)


def innovation_table(data: LandscapeData) -> pd.DataFrame:
    """Innovation major categories (level ``any``) and their subcategories, by period."""
    return _format(_rows_innovation(data), data)


def innovation_count_table(data: LandscapeData) -> pd.DataFrame:
    """Number of innovation major categories per trial (the "points per trial" distribution)."""
    return _format(_rows_innovation_count(data), data)


def explain_table(data: LandscapeData, tables: Iterable[str] | None = None) -> pd.DataFrame:
    """The NCT ids behind every cell: one row per (table, variable, value, column).

    ``column`` is ``overall`` or a period label; ``nct_ids`` is a ``;``-joined sorted list
    whose length is ``n``, and ``denominator`` is the cell's denominator.
    """
    names = list(tables) if tables is not None else list(_BUILDERS)
    records = []
    for name in names:
        if name not in _BUILDERS:
            raise DataError(f"unknown table {name!r}; choose from {sorted(_BUILDERS)}")
        for row in _BUILDERS[name](data):
            cells = [("overall", row.ids, row.denominator)]
            cells += [(p, ids, den) for p, (ids, den) in row.by_period.items()]
            for column, ids, denominator in cells:
                records.append(
                    {
                        "table": name,
                        "variable": row.variable,
                        "value": row.level,
                        "column": column,
                        "n": len(ids),
                        "denominator": len(denominator),
                        "nct_ids": ";".join(sorted(ids)),
                    }
                )
    return pd.DataFrame.from_records(
        records,
        columns=["table", "variable", "value", "column", "n", "denominator", "nct_ids"],
    )


def counts_by_period(
    data: LandscapeData, variable: str, levels: Sequence[str] | None = None
) -> pd.DataFrame:
    """Trials per level and period (rows = levels, columns = periods) for figures."""
    levels = list(levels) if levels is not None else data.levels(variable)
    out = {
        period: [len(data.with_value(variable, lv) & data.period_ids(period)) for lv in levels]
        for period in data.periods
    }
    return pd.DataFrame(out, index=pd.Index(levels, name=variable))


def period_sizes(data: LandscapeData) -> Mapping[str, int]:
    """Number of included trials in each period."""
    return {p: len(data.period_ids(p)) for p in data.periods}
