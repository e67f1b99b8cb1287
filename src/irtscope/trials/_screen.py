"""Screening: each trial is included, or excluded by the first failing criterion, with evidence.

One pure rule per criterion kind. A rule reads a record's fields (through a shared
:class:`~irtscope.trials._text.StudyText`, so each record is scanned once) and returns pass or
fail, a confidence and evidence items ``{rule, field, text}``. Rules run in the protocol's
order; the first failure is the exclusion reason. Cross-record rules (duplicate NCT ids,
duplicate content) use state gathered over the whole run.

Confidence is the rank of the field that settled the call (structured intervention fields
1.0, titles 0.85, free-text summaries 0.6, ...): ``irtscope trials review`` lists low ones.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from irtscope.trials._protocol import (
    DATE_FIELDS,
    Criterion,
    Dictionary,
    Protocol,
    load_dictionary,
)
from irtscope.trials._text import Hit, Lexicon, StudyText, clause_break, gc_paused, get_path

__all__ = [
    "CompiledProtocol",
    "compile_protocol",
    "parse_partial_date",
    "record_screening",
    "screen_studies",
]

_NCT = re.compile(r"^NCT\d{8}$")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

#: field kinds each rule kind reads, strongest first (a protocol criterion may override).
_INTERVENTION_KINDS = ("intervention", "arm")
_FALLBACK_KINDS = ("title", "keyword", "summary")
_CONDITION_KINDS = ("condition", "keyword", "title")
_CONDITION_FALLBACK = ("summary", "eligibility", "intervention", "arm", "primary_outcome")
_MAX_EVIDENCE = 5
#: one encoder for every row: ``json.dumps(..., ensure_ascii=False)`` builds a new one per call
_JSON = json.JSONEncoder(ensure_ascii=False)


@dataclass
class CompiledProtocol:
    """A protocol with its dictionaries loaded and its lexicon compiled (reuse across runs)."""

    protocol: Protocol
    dictionaries: dict[str, Dictionary]
    lexicon: Lexicon
    generic_labels: dict[str, set[str]] = field(default_factory=dict)
    #: the window criterion also checks the study type (protocols without a study_type rule)
    window_checks_type: bool = False
    #: scanners of the criteria's side dictionaries (unless_/sequence_dictionary), run only on
    #: the few fields a rule asks about, never over whole records
    side: dict[str, Lexicon] = field(default_factory=dict)
    #: every literal term of every scanned dictionary, normalised (unknown development codes)
    known_terms: frozenset[str] = frozenset()
    _recent: OrderedDict[int, tuple[dict, StudyText]] = field(default_factory=OrderedDict)

    #: how many recent records keep their scanned text (screen then classify the same dicts)
    RECENT = 4096

    def text(self, study: dict) -> StudyText:
        """The record's scanned text, reused when the same dict was just screened.

        Why: the usual pipeline screens records and then classifies the very same dicts; the
        fields already scanned for screening need not be scanned again. The cache holds the
        dict itself, so an id is never mistaken for another object's.
        """
        key = id(study)
        found = self._recent.get(key)
        if found is not None and found[0] is study:
            self._recent.move_to_end(key)
            return found[1]
        st = StudyText(study, self.lexicon)
        self._recent[key] = (study, st)
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)
        return st


_CACHE: dict[tuple[str, str], CompiledProtocol] = {}


def compile_protocol(protocol: Protocol) -> CompiledProtocol:
    """Load the protocol's dictionaries and compile its scanner (cached per protocol)."""
    key = (protocol.fingerprint(), str(protocol.base_dir))
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    lookups = {
        protocol.countries_dictionary,
        protocol.sponsors_dictionary,
        protocol.why_stopped_dictionary,
        protocol.places_dictionary,
    }
    side_names = {
        d for c in protocol.criteria for d in (c.unless_dictionary, c.sequence_dictionary) if d
    }
    dictionaries = {n: load_dictionary(n, protocol.base_dir) for n in protocol.dictionary_names()}
    lexicon = Lexicon(
        d for n, d in dictionaries.items() if n not in lookups and n not in side_names
    )
    side = {n: Lexicon([dictionaries[n]]) for n in sorted(side_names)}
    generic = {
        n: {e.label for e in d.entries if e.attrs.get("generic") == "yes"}
        for n, d in dictionaries.items()
    }
    known = frozenset(
        _code_key(t)
        for n, d in dictionaries.items()
        if n not in lookups
        for e in d.entries
        for t in e.terms
    )
    window_checks_type = not any(c.rule == "study_type" for c in protocol.criteria)
    compiled = CompiledProtocol(
        protocol, dictionaries, lexicon, generic, window_checks_type, side=side, known_terms=known
    )
    _CACHE[key] = compiled
    return compiled


def parse_partial_date(value: object) -> tuple[dt.date, dt.date] | None:
    """Earliest and latest day a registry date can mean ("2014", "2014-03", "2014-03-05").

    Why a range: registry dates are often partial; a trial dated "2024-06" is inside a
    window ending 2024-06-24 if any day of that month could be.
    """
    if not isinstance(value, str):
        return None
    parts = value.strip().split("-")
    try:
        year = int(parts[0])
        if len(parts) == 1:
            return dt.date(year, 1, 1), dt.date(year, 12, 31)
        month = int(parts[1])
        if len(parts) == 2:
            last = calendar.monthrange(year, month)[1]
            return dt.date(year, month, 1), dt.date(year, month, last)
        day = dt.date(year, month, int(parts[2][:2]))
    except (ValueError, IndexError):
        return None
    return day, day


def _ev(rule: str, field_: str, text: str) -> dict[str, str]:
    return {"rule": rule, "field": field_, "text": text}


def _hit_ev(rule: str, hits: list[Hit]) -> list[dict[str, str]]:
    return [_ev(rule, h.path, h.text) for h in hits[:_MAX_EVIDENCE]]


@dataclass
class RuleResult:
    """Outcome of one rule on one record."""

    passed: bool
    confidence: float
    evidence: list[dict[str, str]]


@dataclass
class _RunState:
    seen: set[str] = field(default_factory=set)


def _rule_duplicate_record(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    nct = get_path(st.study, "protocolSection.identificationModule.nctId")
    path = "identificationModule.nctId"
    if not isinstance(nct, str) or not _NCT.match(nct):
        return RuleResult(False, 1.0, [_ev(crit.id, path, f"missing or malformed: {nct!r}")])
    if nct in state.seen:
        return RuleResult(False, 1.0, [_ev(crit.id, path, f"{nct} already seen in this run")])
    state.seen.add(nct)
    return RuleResult(True, 1.0, [_ev(crit.id, path, nct)])


def registration_date(study: dict, protocol: Protocol) -> str | None:
    """The raw registry date that defines the protocol's window."""
    value = get_path(study, DATE_FIELDS[protocol.date_field])
    return value if isinstance(value, str) else None


def _rule_study_type(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    """Registry study type in the protocol's scope (the reference retrieval's filter)."""
    study_type = get_path(st.study, "protocolSection.designModule.studyType")
    scope = cp.protocol.study_types
    path = "designModule.studyType"
    if scope and study_type not in scope:
        return RuleResult(False, 1.0, [_ev(crit.id, path, f"{study_type} not in scope")])
    return RuleResult(True, 1.0, [_ev(crit.id, path, f"{study_type}")])


def _rule_window(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    """Registration date inside the protocol's window.

    Protocols written before the separate ``study_type`` rule existed have no such criterion;
    for them the window criterion still checks the study type, so they screen as before.
    """
    protocol = cp.protocol
    if cp.window_checks_type:
        study_type = get_path(st.study, "protocolSection.designModule.studyType")
        if protocol.study_types and study_type not in protocol.study_types:
            return RuleResult(
                False, 1.0, [_ev(crit.id, "designModule.studyType", f"{study_type} not in scope")]
            )
    path = DATE_FIELDS[protocol.date_field].removeprefix("protocolSection.")
    raw = registration_date(st.study, protocol)
    span = parse_partial_date(raw)
    if span is None:
        return RuleResult(False, 1.0, [_ev(crit.id, path, f"no usable date: {raw!r}")])
    start, end = protocol.window
    inside = span[1] >= start and span[0] <= end
    text = f"{raw} {'within' if inside else 'outside'} {start}..{end}"
    return RuleResult(inside, 1.0, [_ev(crit.id, path, text)])


def _rule_condition(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    dictionary = cp.dictionaries[crit.dictionary or ""]
    strength = {e.label: e.attrs.get("strength", "specific") for e in dictionary.entries}
    kinds = crit.fields or _CONDITION_KINDS
    hits = st.find(dictionary.name, kinds)
    specific = [h for h in hits if strength[h.label] == "specific"]
    if specific:
        return RuleResult(True, specific[0].confidence, _hit_ev(crit.id, specific))
    generic = [h for h in hits if strength[h.label] == "generic"]
    other = [h for h in hits if strength[h.label] not in {"specific", "generic"}]
    if not crit.fields:
        weak = [
            h
            for h in st.find(dictionary.name, _CONDITION_FALLBACK)
            if strength[h.label] == "specific"
        ]
        if weak:
            return RuleResult(True, min(0.6, weak[0].confidence), _hit_ev(crit.id, weak))
    if generic and not other:
        return RuleResult(True, 0.6, _hit_ev(crit.id, generic))
    conditions = get_path(st.study, "protocolSection.conditionsModule.conditions") or []
    evidence = _hit_ev(crit.id, other) or [
        _ev(crit.id, "conditionsModule.conditions", "; ".join(conditions) or "none listed")
    ]
    return RuleResult(False, 0.9 if other else 0.8, evidence)


#: what a development code looks like: letters then digits ("MK-3475", "SHR-1701", "NBTXR3",
#: "BGB-A317"), at least two letters and one digit, five characters or more
_CODE = re.compile(
    r"(?<![A-Za-z0-9])([A-Za-z]{2,6})([- ]?)([A-Za-z]?\d{1,6}[A-Za-z]{0,2})(?![A-Za-z0-9])"
)
#: an intervention named by a plain word ("Pemetrexed", "Docetaxel"): its codes are aliases
_PLAIN_NAME = re.compile(r"^[A-Za-z][a-z]{5,}(?:\s+[A-Za-z][a-z]+)*$")
#: code-shaped words that are not drugs (targets, genes, units, schedules, scales)
_NOT_CODES = frozenset(
    {
        *("ctla4", "covid19", "covid2019", "sarscov2", "h1n1", "her2", "her3", "brca1", "brca2"),
        *("ros1", "fgfr1", "fgfr2", "fgfr3", "cdk46", "parp1", "tp53", "ki67", "ca125", "ca199"),
        *("cd274", "il12", "il15", "il21", "tlr9", "tlr7", "tlr4", "tlr3", "ctcae5", "ctcae4"),
        *("recist1", "phase1", "phase2", "phase3", "cohort1", "cohort2", "stage1", "stage2"),
        *("stage3", "stage4", "part1", "part2", "day1", "day8", "day15"),
    }
)
_CODE_TYPES = frozenset({"DRUG", "BIOLOGICAL", "GENETIC", "COMBINATION_PRODUCT", "OTHER"})


def _code_key(text: str) -> str:
    return _NON_ALNUM.sub("", text.lower())


def unknown_codes(study: dict, cp: CompiledProtocol) -> list[tuple[str, str]]:
    """(path, code) for each development code in intervention names no dictionary knows.

    Why: a new investigational agent is registered under its code long before it has a name
    or a dictionary entry; a pass of the "other immunotherapy" criterion is then only as good
    as the dictionary, so the call is marked for review instead of silently trusted.
    """
    ivs = get_path(study, "protocolSection.armsInterventionsModule.interventions") or ()
    found: list[tuple[str, str]] = []
    for i, iv in enumerate(ivs):
        if iv.get("type") not in _CODE_TYPES:
            continue
        names = [str(iv.get("name") or ""), *(str(x) for x in iv.get("otherNames") or ())]
        if _PLAIN_NAME.match(names[0].strip()) or any(
            _code_key(n) in cp.known_terms for n in names
        ):
            continue
        # chemical names ("N-[4-[2-(2-amino-4,7-dihydro-4-oxo-1H-pyrrolo...") are no codes
        for text in [n for n in names if len(n) <= 40 and not any(c in n for c in "[],")]:
            for m in _CODE.finditer(text):
                letters, sep, rest = m.groups()
                key = _code_key(m.group())
                digits = sum(ch.isdigit() for ch in rest)
                # "Dose 1", "Group 2", "amino-4": a code's letters are capitals
                if not letters.isupper() and (sep == " " or digits < 3):
                    continue
                if len(key) < 5 or key in _NOT_CODES or key in cp.known_terms:
                    continue
                found.append((f"armsInterventionsModule.interventions[{i}].name", m.group()))
    return found


def _rule_forbidden(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    kinds = crit.fields or (*_INTERVENTION_KINDS, "title")
    hits = st.find(crit.dictionary or "", kinds)
    if hits:
        return RuleResult(False, hits[0].confidence, _hit_ev(crit.id, hits))
    if crit.flag_unknown_codes:
        codes = unknown_codes(st.study, cp)
        if codes:
            ev = [
                _ev(crit.id, path, f"unknown development code {code!r}: not in the dictionaries")
                for path, code in codes[:_MAX_EVIDENCE]
            ]
            return RuleResult(True, 0.5, ev)
    return RuleResult(True, 0.9, [_ev(crit.id, "/".join(kinds), "no mention")])


def _typed_types(crit: Criterion) -> tuple[str, ...]:
    if crit.intervention_types is not None:
        return crit.intervention_types
    return ("RADIATION",) if crit.dictionary == "radiotherapy" and not crit.fields else ()


def typed_interventions(
    crit: Criterion, st: StudyText, cp: CompiledProtocol
) -> tuple[list[tuple[int, dict]], set[str]]:
    """Interventions whose registry type satisfies ``crit``, and the field paths that never do.

    An intervention typed Radiation counts unless its name only names stop phrases ("Far
    Infrared Radiation") or it names diagnostic imaging (``unless_dictionary``: "PET/CT
    imaging with [18F]FDG") and no term of the criterion's dictionary. Those interventions'
    own text does not count either (second value: their field-path prefixes).
    """
    types = _typed_types(crit)
    if not types:
        return [], set()
    name = crit.dictionary or ""
    ivs = get_path(st.study, "protocolSection.armsInterventionsModule.interventions") or ()
    unless = cp.side.get(crit.unless_dictionary or "")
    counting: list[tuple[int, dict]] = []
    ignored: set[str] = set()
    for i, iv in enumerate(ivs):
        if iv.get("type") not in types:
            continue
        iv_name = str(iv.get("name") or "")
        if cp.lexicon.only_stop_phrases(iv_name, name):
            continue
        if unless is not None:
            others = [str(x) for x in iv.get("otherNames") or ()]
            text = "; ".join([iv_name, *others, iv.get("description") or ""])
            named = any(d == name for d, *_ in cp.lexicon.scan_text(iv_name))
            if not named and any(True for _ in unless.scan_text(text)):
                ignored.add(f"armsInterventionsModule.interventions[{i}] ")
                continue
        counting.append((i, iv))
    return counting, ignored


def _sequence_hit(hit: Hit, seq: Lexicon, strong: set[str] | None) -> Hit | None:
    """A sequence phrase in the same clause as ``hit`` (only ``strong`` labels when given)."""
    lo = max(0, hit.start - 100)
    window = hit.source[lo : hit.end + 100]
    for d, label, start, end, _ in seq.scan_text(window):
        if strong is not None and label not in strong:
            continue
        sa, sb = lo + start, lo + end
        if sb <= hit.start:
            between = hit.source[sb : hit.start]
        elif sa >= hit.end:
            between = hit.source[hit.end : sa]
        else:
            between = ""
        if len(between) > 80 or clause_break(between):
            continue
        return hit._replace(dictionary=d, label=label, start=lo + start, end=lo + end)
    return None


def _rule_required(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    name = crit.dictionary or ""
    generic = cp.generic_labels.get(name, set())
    drugs = name == cp.protocol.drugs_dictionary
    counting, ignored = typed_interventions(crit, st, cp)
    if counting:
        i, iv = counting[0]
        path = f"armsInterventionsModule.interventions[{i}].type"
        return RuleResult(True, 1.0, [_ev(crit.id, path, f"{iv.get('type')}: {iv.get('name')}")])
    seq = cp.side.get(crit.sequence_dictionary or "")
    tiers = (crit.fields,) if crit.fields else (_INTERVENTION_KINDS, _FALLBACK_KINDS)
    for kinds in tiers:
        hits = st.find(name, kinds, include_placebo=not drugs)
        if ignored:
            hits = [h for h in hits if not any(h.path.startswith(p) for p in ignored)]
        if hits:
            named = [h for h in hits if h.label not in generic]
            best = named or hits
            conf = best[0].confidence * (1.0 if named else 0.75)
            return RuleResult(True, conf, _sequence_ev(crit.id, best, seq))
    if seq is not None and not crit.fields:
        # PACIFIC-like: radiotherapy stated only as completed before enrolment in the
        # inclusion criteria ("must have completed definitive concurrent chemoradiotherapy")
        strong = {
            e.label
            for e in cp.dictionaries[crit.sequence_dictionary or ""].entries
            if e.attrs.get("strength") == "strong"
        }
        for h in st.find(name, ("eligibility",)):
            if h.label in generic:
                continue
            s = _sequence_hit(h, seq, strong)
            if s is not None:
                text = f"sequence before enrolment ({s.matched}): {h.text}"
                return RuleResult(True, 0.6, [_ev(crit.id, h.path, text)])
    searched_kinds = [k for tier in tiers for k in tier]
    negated = [
        h for h in st.find(name, searched_kinds, include_negated=True) if h.negated or h.placebo
    ]
    if negated:
        ev = [
            _ev(crit.id, h.path, f"does not count (history/negated/placebo): {h.text}")
            for h in negated[:_MAX_EVIDENCE]
        ]
        return RuleResult(False, 0.8, ev)
    searched = "/".join(searched_kinds)
    if ignored:
        searched += " (diagnostic imaging typed Radiation does not count)"
    return RuleResult(False, 0.85, [_ev(crit.id, searched, "no mention")])


def _sequence_ev(rule: str, hits: list[Hit], seq: Lexicon | None) -> list[dict[str, str]]:
    """Evidence items; a mention inside a treatment sequence says so (PACIFIC rule)."""
    out = []
    for h in hits[:_MAX_EVIDENCE]:
        s = _sequence_hit(h, seq, None) if seq is not None else None
        text = f"in the treatment sequence ({s.matched}): {h.text}" if s is not None else h.text
        out.append(_ev(rule, h.path, text))
    return out


def _rule_primary_aim(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    name = crit.dictionary or ""
    title_hits = st.find(name, ("title",))
    if title_hits:
        return RuleResult(False, title_hits[0].confidence, _hit_ev(crit.id, title_hits))
    outcome_fields = st.texts(("primary_outcome",))
    if outcome_fields:
        # the measure names what the trial measures; its description explains why ("this
        # endpoint was selected as a marker of T cell activation ... this biomarker"), which
        # makes a biomarker the means of an efficacy endpoint, not the trial's aim
        outcomes = get_path(st.study, "protocolSection.outcomesModule.primaryOutcomes") or []
        measure_len = {
            f"outcomesModule.primaryOutcomes[{i}]": len(o.get("measure") or "")
            for i, o in enumerate(outcomes)
        }
        hits = [
            h
            for h in st.find(name, ("primary_outcome",))
            if h.start < measure_len.get(h.path, len(h.source))
        ]
        paths = {h.path for h in hits}
        if all(f.path in paths for f in outcome_fields):
            return RuleResult(False, 0.75, _hit_ev(crit.id, hits))
    return RuleResult(True, 0.8, [_ev(crit.id, "title/primary outcomes", "not the primary aim")])


def _rule_duplicate_content(
    crit: Criterion, st: StudyText, cp: CompiledProtocol, state: _RunState
) -> RuleResult:
    # decided across records in screen_studies(); a single record always passes here
    return RuleResult(True, 1.0, [])


_RULES: dict[str, Callable[[Criterion, StudyText, CompiledProtocol, _RunState], RuleResult]] = {
    "duplicate_record": _rule_duplicate_record,
    "study_type": _rule_study_type,
    "window": _rule_window,
    "condition": _rule_condition,
    "forbidden_intervention": _rule_forbidden,
    "required_intervention": _rule_required,
    "primary_aim": _rule_primary_aim,
    "duplicate_content": _rule_duplicate_content,
}


def _content_keys(study: dict) -> list[str]:
    """Keys under which two registrations describe the same trial."""
    ident = get_path(study, "protocolSection.identificationModule") or {}
    keys = []
    title = (ident.get("officialTitle") or ident.get("briefTitle") or "").lower()
    title = _NON_ALNUM.sub("", title)
    if len(title) >= 40:
        keys.append(f"title:{title}")
    org_id = _NON_ALNUM.sub("", ((ident.get("orgStudyIdInfo") or {}).get("id") or "").lower())
    sponsor = get_path(study, "protocolSection.sponsorCollaboratorsModule.leadSponsor.name")
    if len(org_id) >= 4 and isinstance(sponsor, str):
        keys.append(f"org:{sponsor.lower()}:{org_id}")
    return keys


def _secondary_ncts(study: dict) -> set[str]:
    infos = get_path(study, "protocolSection.identificationModule.secondaryIdInfos") or []
    return {i.get("id", "") for i in infos if _NCT.match(str(i.get("id", "")))}


def screen_one(
    study: dict, cp: CompiledProtocol, state: _RunState | None = None, st: StudyText | None = None
) -> dict[str, Any]:
    """Screen one record (cross-record duplicate content is left to :func:`screen_studies`)."""
    state = state or _RunState()
    st = st or cp.text(study)
    protocol = cp.protocol
    evidence: list[dict[str, str]] = []
    confidences: list[float] = []
    weakest = ("", 2.0)
    row: dict[str, Any] = {
        "nct_id": get_path(study, "protocolSection.identificationModule.nctId") or "",
        "decision": "included",
        "step": 0,
        "reason": "",
        "reason_label": "",
    }
    for step, crit in enumerate(protocol.criteria, start=1):
        result = _RULES[crit.rule](crit, st, cp, state)
        evidence.extend(result.evidence)
        if not result.passed:
            row.update(decision="excluded", step=step, reason=crit.id, reason_label=crit.label)
            confidences = [result.confidence]
            weakest = (crit.id, result.confidence)
            break
        confidences.append(result.confidence)
        if result.confidence < weakest[1]:
            weakest = (crit.id, result.confidence)
    raw = registration_date(study, protocol)
    span = parse_partial_date(raw)
    row["registration_date"] = raw
    row["registration_year"] = span[0].year if span else None
    row["confidence"] = round(min(confidences), 3) if confidences else 1.0
    row["overridden"] = False
    row["weakest_rule"] = weakest[0]
    row["_evidence"] = evidence
    return row


def screen_studies(
    studies: Iterable[dict],
    protocol: Protocol | str,
    overrides: Any = None,
    progress: Callable[[int, int | None, str], None] | None = None,
) -> Any:
    """Screen raw API v2 study dicts against a protocol.

    Parameters
    ----------
    studies
        Raw study dicts (from ``Store.iter_studies()`` or a JSON file).
    protocol
        A :class:`Protocol` or a preset name / YAML path.
    overrides
        Reviewer overrides (a DataFrame from :func:`load_overrides`, a path, or None); rows for
        ``decision`` replace the rule's decision and are marked ``overridden``.
    progress
        Optional callback ``(advance, total, description)``.

    Returns
    -------
    pandas.DataFrame
        One row per record: ``nct_id, decision, step, reason, reason_label, evidence (JSON),
        overridden, registration_date, registration_year`` (the contract) plus ``confidence``
        (of the weakest rule that settled the call) and ``weakest_rule`` (its criterion id).
    """
    # The collector stays paused until the temporaries (rows, hits) are gone: re-enabled while
    # they are alive, its first pass walks every one of them (see gc_paused).
    with gc_paused():
        return _screen_studies(studies, protocol, overrides, progress)


def _screen_studies(
    studies: Iterable[dict],
    protocol: Protocol | str,
    overrides: Any,
    progress: Callable[[int, int | None, str], None] | None,
) -> Any:
    import pandas as pd

    from irtscope.trials._overrides import apply_screen_overrides, load_overrides
    from irtscope.trials._protocol import load_protocol

    protocol = load_protocol(protocol)
    cp = compile_protocol(protocol)
    state = _RunState()
    rows = []
    dup_step = next(
        (i for i, c in enumerate(protocol.criteria, 1) if c.rule == "duplicate_content"), None
    )
    owners: dict[str, int] = {}
    with gc_paused():
        for n, study in enumerate(studies, start=1):
            row = screen_one(study, cp, state)
            rows.append(row)
            if dup_step is not None and row["decision"] == "included":
                _check_duplicate_content(study, row, rows, owners, protocol, dup_step)
            if progress is not None and n % 500 == 0:
                progress(500, None, "screening")
    if progress is not None and len(rows) % 500:
        progress(len(rows) % 500, None, "screening")
    if dup_step is not None:
        dup_id = protocol.criteria[dup_step - 1].id
        for row in rows:
            if row["decision"] == "included":
                row["_evidence"].append(
                    _ev(
                        dup_id,
                        "officialTitle/orgStudyId/secondaryIds",
                        "no other included record with the same content",
                    )
                )
    for row in rows:
        row["evidence"] = _JSON.encode(row.pop("_evidence"))
    columns = [
        "nct_id",
        "decision",
        "step",
        "reason",
        "reason_label",
        "evidence",
        "overridden",
        "registration_date",
        "registration_year",
        "confidence",
        "weakest_rule",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["registration_year"] = frame["registration_year"].astype("Int64")
    frame["step"] = frame["step"].astype("int64")
    if overrides is not None:
        table = overrides if isinstance(overrides, pd.DataFrame) else load_overrides(overrides)
        frame = apply_screen_overrides(frame, table, protocol)
    return frame


def _check_duplicate_content(
    study: dict, row: dict, rows: list[dict], owners: dict[str, int], protocol: Protocol, step: int
) -> None:
    """Exclude a record whose content key (or cross-listed NCT id) an earlier included one has.

    The earlier registration keeps its place; the later one is the duplicate. Records arrive
    in store order, so a later-registered duplicate seen first is swapped afterwards.
    """
    crit = protocol.criteria[step - 1]
    index = len(rows) - 1
    keys = _content_keys(study) + [f"nct:{n}" for n in _secondary_ncts(study)]
    keys.append(f"nct:{row['nct_id']}")
    match = next((owners[k] for k in keys if k in owners and owners[k] != index), None)
    if match is None:
        for k in keys:
            owners.setdefault(k, index)
        return
    other = rows[match]
    if other["decision"] != "included":
        return
    mine = (row["registration_date"] or "9999", row["nct_id"])
    theirs = (other["registration_date"] or "9999", other["nct_id"])
    loser, winner = (row, other) if mine > theirs else (other, row)
    key = next(k for k in keys if owners.get(k) == match)
    loser.update(decision="excluded", step=step, reason=crit.id, reason_label=crit.label)
    loser["_evidence"].append(
        _ev(crit.id, key.split(":", 1)[0], f"same trial as {winner['nct_id']} ({key[:80]})")
    )
    if loser is other:
        for k in keys:
            owners[k] = index


def record_screening(con: Any, frame: Any, protocol: Protocol, classification: Any = None) -> int:
    """Store one screening run (and optionally its classification) through ``con``.

    Tables: ``screen_runs`` (run id, protocol name and fingerprint, time, counts),
    ``screen_decisions`` (the screening frame) and ``screen_classifications`` (long form),
    all keyed by ``run_id`` so earlier runs stay for comparison. One transaction per run.
    """
    con.execute(
        """CREATE TABLE IF NOT EXISTS screen_runs (
            run_id INTEGER PRIMARY KEY, protocol VARCHAR, fingerprint VARCHAR,
            created_at TIMESTAMP, n_trials INTEGER, n_included INTEGER, n_overridden INTEGER)"""
    )
    con.execute(
        """CREATE TABLE IF NOT EXISTS screen_decisions (
            run_id INTEGER, nct_id VARCHAR, decision VARCHAR, step INTEGER, reason VARCHAR,
            reason_label VARCHAR, evidence VARCHAR, overridden BOOLEAN,
            registration_date VARCHAR, registration_year INTEGER, confidence DOUBLE)"""
    )
    con.execute(
        """CREATE TABLE IF NOT EXISTS screen_classifications (
            run_id INTEGER, nct_id VARCHAR, variable VARCHAR, value VARCHAR, field VARCHAR,
            evidence VARCHAR, confidence DOUBLE, overridden BOOLEAN)"""
    )
    con.execute("BEGIN TRANSACTION")
    try:
        run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM screen_runs").fetchone()[0]
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        con.execute(
            "INSERT INTO screen_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                protocol.name,
                protocol.fingerprint(),
                now,
                len(frame),
                int((frame["decision"] == "included").sum()),
                int(frame["overridden"].sum()),
            ],
        )
        decisions = frame.copy()
        decisions.insert(0, "run_id", run_id)
        con.register("_screen_frame", decisions)
        con.execute(
            "INSERT INTO screen_decisions SELECT run_id, nct_id, decision, step, reason, "
            "reason_label, evidence, overridden, registration_date, registration_year, "
            "confidence FROM _screen_frame"
        )
        con.unregister("_screen_frame")
        if classification is not None and len(classification):
            long = classification.copy()
            if "overridden" not in long.columns:
                long["overridden"] = False
            long.insert(0, "run_id", run_id)
            con.register("_class_frame", long)
            con.execute(
                "INSERT INTO screen_classifications SELECT run_id, nct_id, variable, value, "
                "field, evidence, confidence, overridden FROM _class_frame"
            )
            con.unregister("_class_frame")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return int(run_id)
