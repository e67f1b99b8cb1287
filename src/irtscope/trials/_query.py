"""One registry query, shared by the harvester (which runs it) and protocols (which list it)."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field


class QuerySpec(BaseModel):
    """A ClinicalTrials.gov API v2 ``/studies`` query.

    Field names mirror the API parameters (``query.cond`` -> ``cond`` ...). ``name`` is a label
    for provenance ("which queries found this trial"); ``key()`` identifies the query by its
    parameters, so renaming a query does not restart its harvest.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Short label used in provenance and reports.")
    cond: str | None = Field(default=None, description="query.cond: condition or disease.")
    term: str | None = Field(default=None, description="query.term: other terms.")
    intr: str | None = Field(default=None, description="query.intr: intervention/treatment.")
    advanced: str | None = Field(
        default=None,
        description="filter.advanced Essie expression, e.g. AREA[StartDate]RANGE[2014-01-01,MAX].",
    )
    overall_status: tuple[str, ...] = Field(
        default=(), description="filter.overallStatus values, e.g. RECRUITING."
    )

    def params(self) -> dict[str, str]:
        """The API query parameters (paging parameters are added by the client)."""
        out: dict[str, str] = {}
        for key, api_name in (
            ("cond", "query.cond"),
            ("term", "query.term"),
            ("intr", "query.intr"),
            ("advanced", "filter.advanced"),
        ):
            value = getattr(self, key)
            if value:
                out[api_name] = value
        if self.overall_status:
            out["filter.overallStatus"] = ",".join(self.overall_status)
        return out

    def key(self) -> str:
        """Stable hash of the query parameters (not the name)."""
        blob = json.dumps(self.params(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
