"""Reviewer overrides: a person's call, with a reason, applied on top of the rules.

Why a file: rules are wrong sometimes, and the reference study's calls were made by reading
records. A reviewer writes ``(nct_id, variable, value, reason, reviewer, date)`` rows in a CSV
or YAML file. ``variable`` is ``decision`` for screening, with value ``included`` or the id of
the criterion that excludes the trial (``no_radiotherapy`` or ``excluded:no_radiotherapy``),
or a classification variable, with value(s) separated by ``;``. Every output marks overridden
rows, and the store keeps every override ever applied (``review_overrides``) as the audit trail.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from irtscope._errors import ConfigError
from irtscope.trials._protocol import Protocol

__all__ = [
    "OVERRIDE_COLUMNS",
    "apply_class_overrides",
    "apply_screen_overrides",
    "load_overrides",
    "record_overrides",
]

OVERRIDE_COLUMNS = ["nct_id", "variable", "value", "reason", "reviewer", "date"]
#: classification variables of docs/contracts.md (a protocol's taxonomy may add more)
CONTRACT_VARIABLES = frozenset(
    {
        "period",
        "registration_year",
        "age_groups",
        "stage",
        "sponsor_type",
        "funder_type",
        "region",
        "multi_region",
        "country",
        "status",
        "has_results",
        "why_stopped",
        "phase",
        "centres",
        "enrollment",
        "enrollment_bin",
        "primary_purpose",
        "allocation",
        "intervention_model",
        "masking",
        "dmc",
        "ici_drug",
        "ici_target",
        "rt_technology",
        "rt_dose",
        "rt_field",
        "rt_auxiliary",
        "pop_metastatic_site",
        "pop_primary_site",
        "pop_lymph_nodes",
        "pop_patient_status",
        "innovation_major_count",
    }
)
_NCT = re.compile(r"^NCT\d{8}$")


def load_overrides(source: str | Path | list[dict] | Any) -> Any:
    """Read and validate overrides from a CSV/YAML file, a list of dicts, or a DataFrame.

    Raises
    ------
    ConfigError
        Naming the file and row when a column is missing, an NCT id is malformed, the reason
        or reviewer is empty, or the date is not ISO ``YYYY-MM-DD``.
    """
    import pandas as pd

    name = str(source) if isinstance(source, str | Path) else "<overrides>"
    if isinstance(source, pd.DataFrame):
        rows = source.to_dict("records")
    elif isinstance(source, list):
        rows = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"overrides file not found: {path}")
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
            if isinstance(data, dict):
                data = data.get("overrides", [])
            if not isinstance(data, list):
                raise ConfigError(f"{path}: expected a list of overrides")
            rows = data
        else:
            rows = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    clean = []
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise ConfigError(f"{name}: override {i} is not a mapping")
        unknown = set(row) - set(OVERRIDE_COLUMNS)
        if unknown:
            raise ConfigError(
                f"{name}: override {i} has unknown key(s) {sorted(unknown)}; the columns are "
                + ", ".join(OVERRIDE_COLUMNS)
            )
        item = {c: str(row.get(c) or "").strip() for c in OVERRIDE_COLUMNS}
        item["variable"] = item["variable"] or "decision"
        if not _NCT.match(item["nct_id"]):
            raise ConfigError(f"{name}: override {i}: bad nct_id {item['nct_id']!r}")
        for key in ("value", "reason", "reviewer"):
            if not item[key]:
                raise ConfigError(f"{name}: override {i} ({item['nct_id']}): empty {key!r}")
        try:
            dt.date.fromisoformat(item["date"])
        except ValueError:
            raise ConfigError(
                f"{name}: override {i} ({item['nct_id']}): date {item['date']!r} is not YYYY-MM-DD"
            ) from None
        clean.append(item)
    return pd.DataFrame(clean, columns=OVERRIDE_COLUMNS)


def _decision(value: str, protocol: Protocol) -> tuple[str, int, str, str]:
    """(decision, step, reason, label) for an override value."""
    ids = [c.id for c in protocol.criteria]
    value = value.strip()
    if value == "included":
        return "included", 0, "", ""
    reason = value.split(":", 1)[1] if value.startswith("excluded:") else value
    if reason not in ids:
        # an exclusion always names its criterion: flow diagrams count trials per criterion
        raise ConfigError(
            f"override value {value!r}: use 'included' or the criterion id that excludes the "
            f"trial (optionally as 'excluded:<id>'), one of {ids}"
        )
    step = ids.index(reason) + 1
    return "excluded", step, reason, protocol.criteria[step - 1].label


def apply_screen_overrides(frame: Any, overrides: Any, protocol: Protocol) -> Any:
    """Apply ``decision`` overrides to a screening frame (last override per trial wins)."""
    frame = frame.copy()
    rows = overrides[overrides["variable"] == "decision"]
    index = {nct: i for i, nct in enumerate(frame["nct_id"])}
    for item in rows.to_dict("records"):
        i = index.get(item["nct_id"])
        if i is None:
            continue
        decision, step, reason, label = _decision(item["value"], protocol)
        evidence = json.loads(frame.at[i, "evidence"] or "[]")
        was = frame.at[i, "decision"] + (
            f" ({frame.at[i, 'reason']})" if frame.at[i, "reason"] else ""
        )
        evidence.append(
            {
                "rule": "override",
                "field": f"reviewer {item['reviewer']} on {item['date']}",
                "text": f"{item['reason']} (rules said: {was})",
            }
        )
        frame.loc[i, ["decision", "step", "reason", "reason_label"]] = [
            decision,
            step,
            reason,
            label,
        ]
        frame.at[i, "evidence"] = json.dumps(evidence, ensure_ascii=False)
        frame.at[i, "overridden"] = True
        frame.at[i, "confidence"] = 1.0
    return frame


def apply_class_overrides(long: Any, overrides: Any) -> Any:
    """Replace a trial's rows for an overridden variable with the reviewer's value(s)."""
    import pandas as pd

    rows = overrides[overrides["variable"] != "decision"]
    if rows.empty:
        return long
    long = long.copy()
    if "overridden" not in long.columns:
        long["overridden"] = False
    known = CONTRACT_VARIABLES | set(long["variable"])
    unknown = sorted(set(rows["variable"]) - known)
    if unknown:
        raise ConfigError(
            f"overrides name unknown variable(s) {unknown}; use 'decision' or one "
            f"of {sorted(known)}"
        )
    present = set(long["nct_id"])
    drop = set()
    added = []
    for item in rows.to_dict("records"):
        if item["nct_id"] not in present:
            continue
        drop.add((item["nct_id"], item["variable"]))
        for value in (v.strip() for v in item["value"].split(";")):
            if value:
                added.append(
                    {
                        "nct_id": item["nct_id"],
                        "variable": item["variable"],
                        "value": value,
                        "field": f"override by {item['reviewer']} on {item['date']}",
                        "evidence": item["reason"],
                        "confidence": 1.0,
                        "overridden": True,
                    }
                )
    keys = list(zip(long["nct_id"], long["variable"], strict=True))
    keep = [k not in drop for k in keys]
    out = pd.concat([long[keep], pd.DataFrame(added, columns=long.columns)], ignore_index=True)
    return out.sort_values(["nct_id", "variable"], kind="stable").reset_index(drop=True)


def record_overrides(con: Any, overrides: Any, source: str = "") -> int:
    """Append overrides to the store's ``review_overrides`` audit table; return the count."""
    con.execute(
        """CREATE TABLE IF NOT EXISTS review_overrides (
            nct_id VARCHAR, variable VARCHAR, value VARCHAR, reason VARCHAR, reviewer VARCHAR,
            date DATE, source VARCHAR, loaded_at TIMESTAMP)"""
    )
    if overrides is None or len(overrides) == 0:
        return 0
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    records = [
        (r["nct_id"], r["variable"], r["value"], r["reason"], r["reviewer"], r["date"], source, now)
        for r in overrides.to_dict("records")
    ]
    con.executemany("INSERT INTO review_overrides VALUES (?, ?, ?, ?, ?, ?, ?, ?)", records)
    return len(records)
