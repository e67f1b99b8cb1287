"""Published numbers of the reference study, and "published vs this snapshot" tables.

The reference study (Li & Ding, Front Med 2025; n = 196 trials, search date 2024-06-24) is
kept as data in ``published/<protocol>.yaml``, keyed by the classification contract's
vocabulary. Putting the paper's numbers beside ours, with the difference in percentage points
and the snapshot's data timestamp, shows a reader at a glance where the registry has moved
since the paper's search and where our rule-based method calls trials differently from the
authors' reading.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from irtscope._errors import ConfigError
from irtscope.trials._describe import (
    ANY_LEVEL,
    CONDITIONAL,
    VARIABLE_LABELS,
    LandscapeData,
    format_n_pct,
)

__all__ = ["PublishedRow", "PublishedStudy", "comparison_table", "load_published"]


class PublishedRow(BaseModel):
    """One published number: trials with ``value`` of ``variable`` (optionally in a period)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variable: str
    value: str
    n: int | None = Field(default=None, ge=0, description="Count; None if only % printed.")
    pct: float | None = Field(default=None, ge=0, le=100, description="Printed percentage.")
    period: str | None = None
    denominator: int | None = Field(default=None, gt=0)


class PublishedStudy(BaseModel):
    """The reference study's published figures (see ``published/nsclc-irt.yaml``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    study: str
    doi: str
    search_date: str
    registry: str
    n_included: int = Field(gt=0)
    periods: dict[str, int]
    flow: dict[str, int]
    rows: list[PublishedRow]

    def denominator(self, row: PublishedRow) -> int:
        """The row's denominator: explicit, else the period size, else all included trials."""
        if row.denominator is not None:
            return row.denominator
        if row.period is not None:
            return self.periods[row.period]
        return self.n_included

    def percent(self, row: PublishedRow) -> float:
        """Printed percentage when there is one, else ``n / denominator``."""
        if row.pct is not None:
            return row.pct
        if row.n is None:
            return math.nan
        return 100 * row.n / self.denominator(row)

    @property
    def citation(self) -> str:
        return (
            f"{self.study} (doi {self.doi}; n={self.n_included}; "
            f"{self.registry} searched {self.search_date})"
        )


def load_published(name_or_path: str | Path = "nsclc-irt") -> PublishedStudy:
    """Load a protocol's published reference numbers (bundled name or a YAML path).

    Raises
    ------
    ConfigError
        Unknown name, unreadable YAML, unknown keys, or a row whose period is not listed.
    """
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text(encoding="utf-8")
        label = str(path)
    else:
        resource = resources.files("irtscope.trials").joinpath(f"published/{name_or_path}.yaml")
        if not resource.is_file():
            raise ConfigError(
                f"no published reference numbers for {name_or_path!r} "
                "(expected irtscope/trials/published/<protocol>.yaml or a .yaml path)"
            )
        text = resource.read_text(encoding="utf-8")
        label = f"published/{name_or_path}.yaml"
    try:
        raw: Any = yaml.safe_load(text)
        study = PublishedStudy.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{label}: invalid published reference file: {exc}") from None
    for row in study.rows:
        if row.period is not None and row.period not in study.periods:
            raise ConfigError(f"{label}: row {row.variable}={row.value} has unknown period")
        if row.n is None and row.pct is None:
            raise ConfigError(f"{label}: row {row.variable}={row.value} has neither n nor pct")
    return study


def _ours(data: LandscapeData, row: PublishedRow) -> tuple[int, int]:
    if row.variable in CONDITIONAL:
        denominator = data.with_value(row.variable, ANY_LEVEL)
    else:
        denominator = set(data.ids)
    if row.period is not None:
        denominator &= data.period_ids(row.period)
    return len(data.with_value(row.variable, row.value) & denominator), len(denominator)


def comparison_table(
    published: PublishedStudy, data: LandscapeData, data_timestamp: str | None
) -> pd.DataFrame:
    """Every published row beside this snapshot's count, share and the difference.

    Parameters
    ----------
    published
        The reference study (:func:`load_published`).
    data
        The included trials of this snapshot.
    data_timestamp
        The snapshot's data timestamp (registry data version or retrieval time), printed on
        every row so an exported table still says when "ours" was measured.

    Returns
    -------
    DataFrame
        ``Variable``, ``Level``, ``Period``, ``Published n (%)``, ``This snapshot n (%)``,
        ``Difference (pp)`` (ours minus published), denominators, ``Snapshot data timestamp``,
        and the key columns ``variable``, ``value``.
    """
    records = []
    for row in published.rows:
        pub_pct = published.percent(row)
        pub_den = published.denominator(row)
        pub_text = f"({pub_pct:.1f})" if row.n is None else f"{row.n} ({pub_pct:.1f})"
        count, denominator = _ours(data, row)
        ours_pct = 100 * count / denominator if denominator else math.nan
        diff = ours_pct - pub_pct
        level = "any (major category)" if row.value == ANY_LEVEL else row.value
        records.append(
            {
                "Variable": VARIABLE_LABELS.get(row.variable, row.variable),
                "Level": level,
                "Period": row.period or "all",
                "Published n (%)": pub_text,
                "This snapshot n (%)": format_n_pct(count, denominator),
                "Difference (pp)": "" if math.isnan(diff) else f"{diff:+.1f}",
                "Published denominator": pub_den,
                "Snapshot denominator": denominator,
                "Snapshot data timestamp": data_timestamp or "unknown",
                "variable": row.variable,
                "value": row.value,
            }
        )
    return pd.DataFrame.from_records(records)
