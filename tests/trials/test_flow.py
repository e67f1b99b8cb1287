"""Screening flow counts and diagram from contract-shaped screening frames."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from irtscope import DataError
from irtscope.trials._flow import REASON_ORDER, flow_counts, flow_figure


def _screening(reasons: list[str]) -> pd.DataFrame:
    rows = []
    for i, reason in enumerate(reasons):
        included = reason == ""
        rows.append(
            {
                "nct_id": f"NCT{i:08d}",
                "decision": "included" if included else "excluded",
                "step": 0 if included else 1,
                "reason": reason,
                "reason_label": "" if included else f"label {reason}",
            }
        )
    return pd.DataFrame(rows)


def test_flow_telescopes() -> None:
    reasons = ["outside_window"] * 3 + ["no_radiotherapy"] * 2 + ["aim_biomarker"] + [""] * 4
    flow = flow_counts(_screening(reasons), entries_read=25).set_index("key")
    assert flow.loc["hits", "n"] == 25
    assert flow.loc["duplicate_record", "n"] == 15
    assert flow.loc["unique", "n"] == 10
    assert flow.loc["outside_window", "n"] == 3
    assert flow.loc["in_window", "n"] == 7
    assert flow.loc["no_radiotherapy", "n"] == 2
    assert flow.loc["no_radiotherapy", "remaining"] == 5
    assert flow.loc["aim_biomarker", "remaining"] == 4
    assert flow.loc["included", "n"] == 4
    assert flow.loc["no_radiotherapy", "label"] == "label no_radiotherapy"
    # every criterion has a row, zero or not
    assert set(REASON_ORDER) <= set(flow.index)


def test_duplicates_in_screening_frame_count_as_removed() -> None:
    flow = flow_counts(_screening(["duplicate_record", "", ""])).set_index("key")
    assert flow.loc["hits", "n"] == 3
    assert flow.loc["duplicate_record", "n"] == 1
    assert flow.loc["unique", "n"] == 2


def test_published_counts_mapped() -> None:
    published = {
        "entries_read": 989,
        "unique_studies": 373,
        "outside_window": 28,
        "no_radiotherapy": 33,
        "included": 196,
    }
    flow = flow_counts(_screening(["", ""]), published=published).set_index("key")
    assert flow.loc["hits", "published"] == 989
    assert flow.loc["duplicate_record", "published"] == 616
    assert flow.loc["in_window", "published"] == 345
    assert flow.loc["no_radiotherapy", "published"] == 33
    assert flow.loc["included", "published"] == 196


def test_bad_inputs_raise() -> None:
    with pytest.raises(DataError, match="unknown exclusion reasons"):
        flow_counts(_screening(["made_up"]))
    with pytest.raises(DataError, match="below the number"):
        flow_counts(_screening(["", ""]), entries_read=1)
    with pytest.raises(DataError, match="lacks columns"):
        flow_counts(pd.DataFrame({"nct_id": ["x"]}))


def test_flow_figure_draws_every_count() -> None:
    flow = flow_counts(_screening(["outside_window", "not_nsclc", ""]), entries_read=5)
    fig = flow_figure(flow)
    assert isinstance(fig, Figure)
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "n = 5" in texts and "n = 3" in texts and "n = 1" in texts
    assert "label not_nsclc: 1" in texts


def test_not_interventional_sits_before_unique_trials() -> None:
    """Like the reference retrieval (interventional only): removed before 'unique trials'."""
    reasons = ["duplicate_record", "not_interventional", "not_interventional", "outside_window"]
    flow = flow_counts(_screening([*reasons, "not_nsclc", "", ""]), entries_read=9)
    keys = list(flow["key"])
    assert keys[:4] == ["hits", "duplicate_record", "not_interventional", "unique"]
    assert keys.index("outside_window") == keys.index("unique") + 1
    flow = flow.set_index("key")
    assert flow.loc["duplicate_record", "n"] == 3  # 9 hits, 6 unique records
    assert flow.loc["not_interventional", "n"] == 2
    assert flow.loc["not_interventional", "remaining"] == 4
    assert flow.loc["unique", "n"] == 4
    assert flow.loc["in_window", "n"] == 3
    assert flow.loc["included", "n"] == 2
    texts = " ".join(t.get_text() for t in flow_figure(flow.reset_index()).axes[0].texts)
    assert "label not_interventional: n = 2" in texts
    assert "Unique trials screened\nn = 4" in texts
    assert "label not_interventional: 2" not in texts  # not listed again with later exclusions
