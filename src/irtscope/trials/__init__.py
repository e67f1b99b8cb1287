"""ClinicalTrials.gov landscape: sources -> store -> screen -> classify -> describe -> report."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irtscope.trials._api import CtgovClient, HarvestResult, harvest
    from irtscope.trials._asof import StoreAsOf, iter_studies_as_of, list_snapshots
    from irtscope.trials._changes import Change, SnapshotChanges, compare_snapshots
    from irtscope.trials._classify import classify_studies
    from irtscope.trials._describe import (
        LandscapeData,
        cochran_armitage,
        explain_table,
        ici_table,
        innovation_table,
        median_iqr,
        table1,
        table2,
        wilson_ci,
    )
    from irtscope.trials._flow import flow_counts, flow_figure
    from irtscope.trials._overrides import (
        apply_class_overrides,
        apply_screen_overrides,
        load_overrides,
        record_overrides,
    )
    from irtscope.trials._protocol import (
        Criterion,
        Dictionary,
        Protocol,
        available_protocols,
        load_dictionary,
        load_protocol,
    )
    from irtscope.trials._published import comparison_table, load_published
    from irtscope.trials._report import ReportResult, build_landscape_report, write_landscape_report
    from irtscope.trials._screen import record_screening, screen_studies
    from irtscope.trials._sources_csv import studies_to_registry_csv
    from irtscope.trials._sources_files import ImportReport, import_paths
    from irtscope.trials._store import Store

from irtscope.trials._query import QuerySpec

# Ingest names load on first use so `irtscope --help` does not import httpx/pyarrow/duckdb.
_LAZY = {
    "CtgovClient": "irtscope.trials._api",
    "HarvestResult": "irtscope.trials._api",
    "harvest": "irtscope.trials._api",
    "ImportReport": "irtscope.trials._sources_files",
    "import_paths": "irtscope.trials._sources_files",
    "Store": "irtscope.trials._store",
    "StoreAsOf": "irtscope.trials._asof",
    "iter_studies_as_of": "irtscope.trials._asof",
    "list_snapshots": "irtscope.trials._asof",
    "Change": "irtscope.trials._changes",
    "SnapshotChanges": "irtscope.trials._changes",
    "compare_snapshots": "irtscope.trials._changes",
    "studies_to_registry_csv": "irtscope.trials._sources_csv",
    "LandscapeData": "irtscope.trials._describe",
    "cochran_armitage": "irtscope.trials._describe",
    "explain_table": "irtscope.trials._describe",
    "ici_table": "irtscope.trials._describe",
    "innovation_table": "irtscope.trials._describe",
    "median_iqr": "irtscope.trials._describe",
    "table1": "irtscope.trials._describe",
    "table2": "irtscope.trials._describe",
    "wilson_ci": "irtscope.trials._describe",
    "comparison_table": "irtscope.trials._published",
    "load_published": "irtscope.trials._published",
    "flow_counts": "irtscope.trials._flow",
    "flow_figure": "irtscope.trials._flow",
    "ReportResult": "irtscope.trials._report",
    "build_landscape_report": "irtscope.trials._report",
    "write_landscape_report": "irtscope.trials._report",
    "Criterion": "irtscope.trials._protocol",
    "Dictionary": "irtscope.trials._protocol",
    "Protocol": "irtscope.trials._protocol",
    "available_protocols": "irtscope.trials._protocol",
    "load_dictionary": "irtscope.trials._protocol",
    "load_protocol": "irtscope.trials._protocol",
    "screen_studies": "irtscope.trials._screen",
    "record_screening": "irtscope.trials._screen",
    "classify_studies": "irtscope.trials._classify",
    "load_overrides": "irtscope.trials._overrides",
    "apply_screen_overrides": "irtscope.trials._overrides",
    "apply_class_overrides": "irtscope.trials._overrides",
    "record_overrides": "irtscope.trials._overrides",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__: list[str] = [
    "Change",
    "Criterion",
    "CtgovClient",
    "Dictionary",
    "HarvestResult",
    "ImportReport",
    "LandscapeData",
    "Protocol",
    "QuerySpec",
    "ReportResult",
    "SnapshotChanges",
    "Store",
    "StoreAsOf",
    "apply_class_overrides",
    "apply_screen_overrides",
    "available_protocols",
    "build_landscape_report",
    "classify_studies",
    "cochran_armitage",
    "compare_snapshots",
    "comparison_table",
    "explain_table",
    "flow_counts",
    "flow_figure",
    "harvest",
    "ici_table",
    "import_paths",
    "innovation_table",
    "iter_studies_as_of",
    "list_snapshots",
    "load_dictionary",
    "load_overrides",
    "load_protocol",
    "load_published",
    "median_iqr",
    "record_overrides",
    "record_screening",
    "screen_studies",
    "studies_to_registry_csv",
    "table1",
    "table2",
    "wilson_ci",
    "write_landscape_report",
]
