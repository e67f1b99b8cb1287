"""Study protocol: what to retrieve, how to screen, how to classify, validated from YAML.

A protocol is the whole study design in one file, so a user can run the same machinery for
another condition or intervention without touching code: the registry queries, the
registration window (and which registry date defines it), the ordered exclusion criteria, the
dictionaries each criterion and classifier uses, and the period cut points. The built-in
``nsclc-irt`` preset restates the reference study (Li & Ding, Front Med 2025).

Dictionaries (drug names, codes, brands, radiotherapy terms, countries, sponsor patterns...)
are YAML data files. A protocol names them; a name without a path resolves first next to the
protocol file, then in the package's ``dictionaries/`` folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from irtscope._errors import ConfigError
from irtscope.trials._query import QuerySpec

__all__ = [
    "Criterion",
    "Dictionary",
    "DictionaryEntry",
    "Period",
    "Protocol",
    "available_protocols",
    "load_dictionary",
    "load_protocol",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid")

#: Registry date that defines the study window, and the API v2 field it reads.
DATE_FIELDS = {
    "first_submitted": "protocolSection.statusModule.studyFirstSubmitDate",
    "first_posted": "protocolSection.statusModule.studyFirstPostDateStruct.date",
    "start": "protocolSection.statusModule.startDateStruct.date",
}

RuleKind = Literal[
    "duplicate_record",
    "study_type",
    "window",
    "condition",
    "forbidden_intervention",
    "required_intervention",
    "primary_aim",
    "duplicate_content",
]


class DictionaryEntry(BaseModel):
    """One concept: a label, its literal terms and/or regular expressions, and attributes.

    Terms are matched case-insensitively on word boundaries; spaces and hyphens inside a term
    match any run of spaces/hyphens (so ``pd-1`` also finds ``PD1`` and ``PD 1``). Patterns are
    regular expressions over lower-cased text and must not use capturing groups. An entry with
    ``attrs: {stop: "yes"}`` is a list of longer phrases that only shadow the dictionary's own
    shorter terms (the longest match wins, then the stop hit is dropped): "radiation
    pneumonitis" keeps "radiation" from counting as a treatment.
    """

    model_config = _FROZEN

    label: str
    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    attrs: dict[str, str] = Field(default_factory=dict)


class Dictionary(BaseModel):
    """A named list of entries (loaded from ``dictionaries/<name>.yaml``)."""

    model_config = _FROZEN

    name: str
    description: str = ""
    entries: tuple[DictionaryEntry, ...]
    #: exact (case-insensitive) full-string mappings, e.g. sponsor name -> sponsor type.
    overrides: dict[str, str] = Field(default_factory=dict)


class Criterion(BaseModel):
    """One exclusion criterion; criteria run in list order and the first failure excludes."""

    model_config = _FROZEN

    id: str = Field(description="Stable id, e.g. 'no_radiotherapy' (see docs/contracts.md).")
    label: str = Field(description="Human text for flow diagrams and evidence.")
    rule: RuleKind
    dictionary: str | None = Field(
        default=None, description="Dictionary the rule matches (condition/intervention/aim)."
    )
    fields: tuple[str, ...] = Field(
        default=(),
        description="Text fields searched (default depends on the rule); see _text.FIELD_KINDS.",
    )
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Weakest evidence accepted as a match."
    )
    intervention_types: tuple[str, ...] | None = Field(
        default=None,
        description=(
            "required_intervention: registry intervention types (e.g. RADIATION) that satisfy "
            "the criterion by their type alone. Default: RADIATION for the 'radiotherapy' "
            "dictionary (protocols written before this field), none otherwise."
        ),
    )
    unless_dictionary: str | None = Field(
        default=None,
        description=(
            "required_intervention: a dictionary naming interventions that do not count even "
            "when typed so (diagnostic tracers typed Radiation): such an intervention satisfies "
            "nothing, and its own text does not count either."
        ),
    )
    sequence_dictionary: str | None = Field(
        default=None,
        description=(
            "required_intervention: a dictionary of treatment-sequence phrases (consolidation, "
            "after/following, completed). A mention in the same clause is reported as the "
            "trial's sequence (e.g. an ICI after chemoradiotherapy, PACIFIC), and counts in the "
            "inclusion criteria too, where other mentions are the patients' history."
        ),
    )
    flag_unknown_codes: bool = Field(
        default=False,
        description=(
            "forbidden_intervention: an intervention named by a development code that no "
            "dictionary knows lowers the confidence of a pass, so reviewers see it first."
        ),
    )

    @model_validator(mode="after")
    def _needs_dictionary(self) -> Criterion:
        needs = {"condition", "forbidden_intervention", "required_intervention", "primary_aim"}
        if self.rule in needs and not self.dictionary:
            raise ValueError(f"criterion {self.id!r}: rule {self.rule!r} needs a 'dictionary'")
        return self


class Period(BaseModel):
    """A registration-year period such as 2014-2017 (both ends inclusive)."""

    model_config = _FROZEN

    label: str
    start: int
    end: int

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"period {self.label!r}: end {self.end} before start {self.start}")
        return self


class Protocol(BaseModel):
    """A complete, frozen study protocol (validated; unknown keys raise ``ConfigError``)."""

    model_config = _FROZEN

    name: str
    title: str = ""
    reference: str = ""
    queries: tuple[QuerySpec, ...] = ()
    study_types: tuple[str, ...] = Field(
        default=("INTERVENTIONAL",),
        description=(
            "Registry study types in scope: others fail the 'study_type' criterion, or the "
            "'window' criterion when the protocol has no 'study_type' criterion."
        ),
    )
    date_field: Literal["first_submitted", "first_posted", "start"] = "first_submitted"
    window_start: dt.date = dt.date(2014, 1, 1)
    window_end: dt.date | None = Field(
        default=None, description="Last day of the window; default: the search date."
    )
    search_date: dt.date
    criteria: tuple[Criterion, ...]
    periods: tuple[Period, ...] = ()
    taxonomy: dict[str, str] = Field(
        default_factory=dict,
        description="Classification variable -> dictionary name (rt_*, pop_*, stage, ...).",
    )
    innovation_categories: tuple[str, ...] = Field(
        default=(), description="Variables counted by innovation_major_count."
    )
    drugs_dictionary: str = Field(
        default="ici_drugs", description="Dictionary whose entries are the named drugs."
    )
    countries_dictionary: str = "countries"
    sponsors_dictionary: str = "sponsors"
    why_stopped_dictionary: str = "why_stopped"
    places_dictionary: str | None = Field(
        default=None,
        description=(
            "Place/institution names -> country (entry labels as in the countries "
            "dictionary): region inferred from the lead sponsor when a record lists no sites."
        ),
    )
    weak_confidence: float = Field(
        default=0.7, ge=0, le=1, description="Calls below this are listed by 'trials review'."
    )
    base_dir: Path | None = Field(
        default=None, exclude=True, description="Folder of the protocol file (set by loader)."
    )

    @field_validator("criteria")
    @classmethod
    def _unique_ids(cls, value: tuple[Criterion, ...]) -> tuple[Criterion, ...]:
        ids = [c.id for c in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate criterion ids: {dupes}")
        if not value:
            raise ValueError("a protocol needs at least one criterion")
        return value

    @model_validator(mode="after")
    def _window(self) -> Protocol:
        end = self.window_end or self.search_date
        if end < self.window_start:
            raise ValueError(f"window ends ({end}) before it starts ({self.window_start})")
        return self

    @property
    def window(self) -> tuple[dt.date, dt.date]:
        """Inclusive registration window (start, end)."""
        return self.window_start, self.window_end or self.search_date

    def dictionary_names(self) -> list[str]:
        """Every dictionary the protocol refers to (criteria, taxonomy, lookups)."""
        names = [c.dictionary for c in self.criteria if c.dictionary]
        names += [
            d for c in self.criteria for d in (c.unless_dictionary, c.sequence_dictionary) if d
        ]
        names += list(self.taxonomy.values())
        names += [self.drugs_dictionary, self.countries_dictionary, self.sponsors_dictionary]
        names.append(self.why_stopped_dictionary)
        if self.places_dictionary:
            names.append(self.places_dictionary)
        return list(dict.fromkeys(names))

    def period_of(self, year: int | None) -> str | None:
        """The period label containing ``year`` (None outside every period)."""
        if year is None:
            return None
        for period in self.periods:
            if period.start <= year <= period.end:
                return period.label
        return None

    def fingerprint(self) -> str:
        """Short hash of the validated settings, recorded with every screening run."""
        blob = self.model_dump_json(exclude={"base_dir"}).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _format_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return f"{source}: invalid protocol ({'; '.join(parts)})"


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc


def _preset_dir() -> Path:
    return Path(str(resources.files("irtscope.trials") / "protocols"))


def _dictionary_dir() -> Path:
    return Path(str(resources.files("irtscope.trials") / "dictionaries"))


def available_protocols() -> list[str]:
    """Names of the built-in protocol presets."""
    return sorted(p.stem for p in _preset_dir().glob("*.yaml"))


def protocol_from_dict(data: Any, source: str = "<dict>", base_dir: Path | None = None) -> Protocol:
    """Validate a protocol mapping; errors name the bad key and the source."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a protocol must be a mapping, got {type(data).__name__}")
    try:
        protocol = Protocol.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
    for name in protocol.dictionary_names():
        load_dictionary(name, protocol.base_dir)  # fail early on a missing dictionary
    return protocol


def load_protocol(name_or_path: str | Path | Protocol) -> Protocol:
    """Load a built-in preset by name (``"nsclc-irt"``) or a protocol YAML file by path.

    Raises
    ------
    ConfigError
        When the file is missing, is not YAML, has unknown keys or bad values, or names a
        dictionary that cannot be found.
    """
    if isinstance(name_or_path, Protocol):
        return name_or_path
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        preset = _preset_dir() / f"{name_or_path}.yaml"
        if not preset.is_file():
            known = ", ".join(available_protocols())
            raise ConfigError(f"unknown protocol {str(name_or_path)!r}; presets: {known}")
        path = preset
    if not path.is_file():
        raise ConfigError(f"protocol file not found: {path}")
    return protocol_from_dict(_read_yaml(path), str(path), path.resolve().parent)


@lru_cache(maxsize=128)
def _load_dictionary_file(path: Path) -> Dictionary:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a dictionary must be a mapping")
    data.setdefault("name", path.stem)
    try:
        return Dictionary.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(str(path), exc).replace("protocol", "dictionary")) from None


def load_dictionary(name: str, base_dir: Path | None = None) -> Dictionary:
    """Load dictionary ``name``: a path, a file next to the protocol, or a packaged one."""
    candidates = []
    direct = Path(name)
    if direct.suffix in {".yaml", ".yml"}:
        candidates.append(direct if direct.is_absolute() or base_dir is None else base_dir / direct)
    else:
        if base_dir is not None:
            candidates.append(base_dir / f"{name}.yaml")
        candidates.append(_dictionary_dir() / f"{name}.yaml")
    for path in candidates:
        if path.is_file():
            return _load_dictionary_file(path.resolve())
    raise ConfigError(f"dictionary {name!r} not found (looked in {[str(c) for c in candidates]})")
