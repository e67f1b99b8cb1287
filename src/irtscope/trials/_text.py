"""Text fields of a raw study, and context-aware dictionary matching over them.

Why one combined scanner: classifying thousands of records a second leaves no room for one
regex per term. All dictionaries a protocol uses are compiled into a single alternation (one
pass per text field); each hit is then mapped back to its (dictionary, label).

Why context: registry text names things it is *not* doing ("no prior radiotherapy",
"patients with brain metastases are excluded", "without SBRT"). A hit preceded by a negation
or history cue in the same sentence, or followed by "is/are excluded/not allowed", is kept
but flagged ``negated`` so rules can ignore it. The exclusion-criteria part of the eligibility
text is never scanned: it lists what a trial is not about.

Fields are ranked: structured fields (interventions, arm groups, conditions) outrank the
titles, which outrank free-text summaries; rules use the rank as confidence.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from irtscope._errors import ConfigError
from irtscope._gc import gc_paused
from irtscope.trials._protocol import Dictionary

__all__ = [
    "FIELD_CONFIDENCE",
    "Hit",
    "Lexicon",
    "StudyText",
    "TextField",
    "clause_break",
    "gc_paused",
    "get_path",
    "is_negated",
    "snippet",
    "soft_wrap",
    "split_eligibility",
    "study_fields",
    "trie_regex",
]

#: Confidence that a mention in this kind of field describes the trial itself.
FIELD_CONFIDENCE = {
    "intervention": 1.0,
    "arm": 0.95,
    "condition": 1.0,
    "keyword": 0.9,
    "title": 0.85,
    "primary_outcome": 0.75,
    "summary": 0.6,
    "eligibility": 0.55,
    "description": 0.5,
}

_SEP_CHARS = " -\u2010\u2011\u2012\u2013\u2014\u2015/_"
_SEP_RE = re.compile(f"[{re.escape(_SEP_CHARS)}]+")
_SEP_CLASS = f"[{re.escape(_SEP_CHARS)}]*"

# "no/not/without (disease) progression after chemoradiotherapy" negates the progression, not
# the radiotherapy: it is the PACIFIC consolidation sequence, not a trial without radiotherapy.
_NOT_PROGRESSION = r"(?!\s+(?:evidence\s+of\s+)?(?:disease\s+|tumou?r\s+)?progress)"
_PRE_CUES = re.compile(
    r"(?:\bno\b" + _NOT_PROGRESSION + r"|\bnot\b(?!\s+(?:progress|yet\b|only\b|limited\b))"
    # "with or without SBRT", "with and without radiotherapy", "with/without": an add-on
    # design (one arm gets it), the commonest iRT title, not a trial without SBRT
    r"|(?<!\bor )(?<!\band )(?<!\bwith/)(?<!\bwith /)\bwithout\b" + _NOT_PROGRESSION + r"|\bnever\b"
    r"|\bneither\b|\bnor\b|\bprior\b(?!\s+to\b)"
    r"|\bprevious(?:ly)?\b(?!\s+(?:to|untreated)\b)|\bhistory of\b|\bexclud\w*|\bexclusion\b"
    r"|\bexcept\b"
    r"|\bother than\b|\bineligible\b|\bcontraindicat\w*|\babsence of\b|\bfree of\b"
    r"|\brather than\b|\binstead of\b|\bunless\b|\bhave received\b|\bhad received\b"
    r"|\bhas received\b|\bnaive\b|\bna[iï]ve to\b|\bnot eligible\b|\bnot allowed\b)"
)
_POST_CUES = re.compile(
    r"[^.;\n]{0,40}?\b(?:(?:is|are|will be|was|were|be)\s+(?:not\s+\w+|excluded|prohibited|"
    r"forbidden|ineligible|not\s+permitted)|not (?:allowed|permitted|eligible)|excluded|"
    r"prohibited|naive|na[iï]ve)\b"
)
_SCOPE_BREAK = re.compile(
    r"\b(?:receiv\w*|undergo\w*|(?:will|to)\s+be\s+(?:given|treated|administered|delivered|"
    r"randomi[sz]ed)|randomi[sz]ed\s+to|assigned\s+to|followed\s+by)\b"
)
# History: the disease came back or progressed after a treatment ("NSCLC that has come back
# after radiation therapy", "recurrence after prior chemoradiation"): that treatment is the
# patients' past, not the trial's. Not after a negation: "have not progressed following
# chemoradiation" is the consolidation sequence (see _NOT_PROGRESSION).
_HISTORY_CUES = re.compile(
    r"\b(?:recurr\w*|relaps\w*|progressed|progressing|progressive disease|(?:come|came) back|"
    r"failed|failure of|failing)\s+(?:[\w,()-]+\s+){0,5}?(?:after|following|post|despite)\s"
    r"|\brefractory\s+to\s"
)
_HISTORY_NEGATED = re.compile(r"\b(?:no|not|without|non|free of)[\s-]+(?:\w+\s+)?$")
# literal first: re's prefix search makes this cheap on long eligibility texts
_EXCLUSION_HEAD = re.compile(r"exclusions?(?:\s+criteria\b|\s*:)")


class TextField(NamedTuple):
    """One piece of study text: its kind (for ranking), its path (for evidence) and the text.

    ``placebo`` marks placebo/sham arms and placebo interventions: a drug named there is not
    given to anyone and must not count as the trial's drug. A named tuple, not a dataclass:
    every record builds a dozen of these and tuples are several times cheaper to make.
    """

    kind: str
    path: str
    text: str
    placebo: bool = False


class Hit(NamedTuple):
    """A dictionary match in one field (a named tuple: records make dozens, see TextField).

    ``negated`` is None while not yet decided: :class:`StudyText` decides it only for the hits
    a rule asks for (fewer than half of them), from ``scanned`` (the lower-cased text that was
    scanned, all fields joined) and ``offset`` (where this field starts in it). Hits handed out
    by :meth:`StudyText.find` and :meth:`Lexicon.scan` always have it decided.
    """

    dictionary: str
    label: str
    kind: str
    path: str
    source: str
    negated: bool | None
    placebo: bool
    start: int
    end: int
    confidence: float = 0.5  # rank of the field kind (FIELD_CONFIDENCE)
    scanned: str = ""
    offset: int = 0

    def decided(self) -> Hit:
        """This hit with ``negated`` decided (itself when it already is)."""
        if self.negated is not None:
            return self
        negated = is_negated(self.scanned, self.offset + self.start, self.offset + self.end)
        return _new_tuple(Hit, (*self[:5], negated, *self[6:]))  # type: ignore[no-any-return]

    @property
    def matched(self) -> str:
        """The matched text itself."""
        return self.source[self.start : self.end]

    @property
    def text(self) -> str:
        """The match with some context (the evidence shown to reviewers)."""
        return snippet(self.source, self.start, self.end)


_new_tuple = tuple.__new__


def _by_confidence(hit: Hit) -> float:
    return hit.confidence


def _rank(kind: str) -> float:
    return FIELD_CONFIDENCE.get(kind, 0.5)


_PATH_PARTS: dict[str, list[str]] = {}


def get_path(obj: object, dotted: str) -> object:
    """Value at ``a.b.c`` in nested dicts (None when any step is missing)."""
    parts = _PATH_PARTS.get(dotted)
    if parts is None:  # a handful of distinct paths, read for every record: split once
        parts = _PATH_PARTS[dotted] = dotted.split(".")
    for part in parts:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def split_eligibility(text: str) -> tuple[str, str]:
    """(inclusion part, exclusion part) of an eligibility-criteria text.

    Registry texts put "Exclusion Criteria:" as a heading; everything after the first such
    heading is the exclusion part. Without a heading the whole text counts as inclusion.
    """
    lower = text.lower()
    if len(lower) == len(text):
        m = _EXCLUSION_HEAD.search(lower)
    else:
        m = re.search(_EXCLUSION_HEAD.pattern, text, re.I)
    if m is None:
        return text, ""
    return text[: m.start()], text[m.start() :]


#: The registry's type prefix of an arm's intervention names ("Radiation: PET/CT imaging with
#: [18F]FDG"): the type is checked on the intervention itself (where a diagnostic tracer typed
#: Radiation is told apart from radiotherapy); as arm text it would read as a radiotherapy term.
_IV_TYPE = re.compile(
    r"^(?:drug|device|biological|procedure|radiation|behavioral|genetic|dietary supplement|"
    r"combination product|combination_product|diagnostic test|other)\s*:\s*",
    re.I,
)


def _join(values: Iterable[str | None]) -> str:
    return "; ".join([v for v in values if v])


def _tf(kind: str, path: str, text: str, placebo: bool) -> TextField:
    # same as TextField(...), minus the named tuple's Python-level __new__ (hot path)
    return _new_tuple(TextField, (kind, path, text, placebo))  # type: ignore[no-any-return]


def study_fields(study: dict) -> list[TextField]:
    """Every text field the rules read, ranked by kind (see module docstring)."""
    ps = study.get("protocolSection") or {}
    out: list[TextField] = []
    ident = ps.get("identificationModule") or {}
    title = _join((ident.get("briefTitle"), ident.get("officialTitle"), ident.get("acronym")))
    if title:
        out.append(_tf("title", "identificationModule.briefTitle/officialTitle", title, False))
    cond = ps.get("conditionsModule") or {}
    if cond.get("conditions"):
        out.append(
            _tf("condition", "conditionsModule.conditions", _join(cond["conditions"]), False)
        )
    if cond.get("keywords"):
        out.append(_tf("keyword", "conditionsModule.keywords", _join(cond["keywords"]), False))
    arms = ps.get("armsInterventionsModule") or {}
    for i, iv in enumerate(arms.get("interventions") or ()):
        name = iv.get("name") or ""
        text = _join((name, _join(iv.get("otherNames") or ()), iv.get("description")))
        placebo = "placebo" in name.lower() or "sham" in name.lower()
        path = f"armsInterventionsModule.interventions[{i}] ({iv.get('type', '?')}: {name})"
        out.append(_tf("intervention", path, text, placebo))
    for i, arm in enumerate(arms.get("armGroups") or ()):
        label = arm.get("label") or ""
        names = [_IV_TYPE.sub("", n) for n in arm.get("interventionNames") or () if n]
        text = _join((label, arm.get("description"), _join(names)))
        placebo = arm.get("type") in {"PLACEBO_COMPARATOR", "SHAM_COMPARATOR"}
        out.append(_tf("arm", f"armsInterventionsModule.armGroups[{i}] ({label})", text, placebo))
    desc = ps.get("descriptionModule") or {}
    if desc.get("briefSummary"):
        out.append(_tf("summary", "descriptionModule.briefSummary", desc["briefSummary"], False))
    if desc.get("detailedDescription"):
        out.append(
            _tf(
                "description",
                "descriptionModule.detailedDescription",
                desc["detailedDescription"],
                False,
            )
        )
    outcomes = (ps.get("outcomesModule") or {}).get("primaryOutcomes") or ()
    for i, oc in enumerate(outcomes):
        text = _join((oc.get("measure"), oc.get("description")))
        out.append(_tf("primary_outcome", f"outcomesModule.primaryOutcomes[{i}]", text, False))
    elig = (ps.get("eligibilityModule") or {}).get("eligibilityCriteria")
    if elig:
        inclusion, _ = split_eligibility(elig)
        out.append(
            _tf(
                "eligibility", "eligibilityModule.eligibilityCriteria (inclusion)", inclusion, False
            )
        )
    return out


def is_negated(lower: str, start: int, end: int) -> bool:
    """Whether the mention ``lower[start:end]`` sits in a negated/excluded context.

    Looks back at most 80 characters, not past the start of the sentence or list item, for a
    cue ("no", "without", "prior", "excluded", ...), and ahead up to the next sentence break
    for "is/are excluded", "not allowed"...
    """
    lo = max(0, start - 80)
    nl = lower.rfind("\n", lo, start)
    while nl >= lo and soft_wrap(lower, nl):
        nl = lower.rfind("\n", lo, nl)
    cut = max(
        nl,
        lower.rfind(". ", lo, start),
        lower.rfind("; ", lo, start),
        lower.rfind(": ", lo, start),
        lower.rfind("* ", lo, start),
        lower.rfind("\u2022", lo, start),
    )
    if cut >= lo:
        lo = cut + 1
    cues = list(_PRE_CUES.finditer(lower, lo, start))
    if cues and not _scope_ends(lower[cues[-1].end() : start]):
        return True
    if _is_history(lower, lo, start):
        return True
    return _POST_CUES.match(lower, end, min(len(lower), end + 60)) is not None


def soft_wrap(text: str, i: int) -> bool:
    """Whether the newline at ``text[i]`` only wraps a line inside a sentence.

    Legacy registry XML hard-wraps its text blocks at about 80 characters ("failed previous
    \nconcurrent chemoradiation"); such a newline must not end a negation's scope or a clause.
    A newline after a sentence end or another newline, or before a list bullet or number,
    is a real break.
    """
    if i == 0 or text[i - 1] in "\n.:;":
        return False
    j = i + 1
    n = len(text)
    while j < n and text[j] in " \t":
        j += 1
    return j < n and text[j].isalpha()


def clause_break(between: str) -> bool:
    """Whether ``between`` ends a clause (". ", ";", a real line break; see soft_wrap)."""
    if ";" in between or ". " in between or between.endswith("."):
        return True
    i = between.find("\n")
    while i >= 0:
        if not soft_wrap(between, i):
            return True
        i = between.find("\n", i + 1)
    return False


def _is_history(lower: str, lo: int, start: int) -> bool:
    """Whether the mention follows "recurred/progressed/came back after ..." in its clause.

    Cheap pre-test first (most mentions have none of the cue words before them).
    """
    window = lower[lo:start]
    if not any(w in window for w in _HISTORY_WORDS):
        return False
    for m in _HISTORY_CUES.finditer(lower, lo, start):
        if m.end() > start:
            break
        tail = lower[m.end() : start]
        # the treatment is the object of "after": a few words at most ("after prior
        # definitive chemo-radiation"), no new clause in between
        if tail.count(" ") > 4 or _scope_ends(tail) or "," in tail:
            continue
        if _HISTORY_NEGATED.search(lower, max(lo, m.start() - 20), m.start()):
            continue  # "not progressed following CRT": the consolidation sequence
        return True
    return False


_HISTORY_WORDS = ("recur", "relaps", "progress", "back", "fail", "refractory")


def _scope_ends(between: str) -> bool:
    """Whether a verb of treatment between a cue and a mention ends the cue's scope.

    "patients not eligible for surgery will receive SBRT", "patients without EGFR mutations
    receive SABR": the cue negates the words next to it, not the treatment the trial gives.
    A verb right after the cue stays under it ("did not receive radiotherapy").
    """
    m = _SCOPE_BREAK.search(between)
    return m is not None and bool(between[: m.start()].strip(" ,-/"))


def _tokens(term: str) -> list[str]:
    """A term as trie edges: characters, with each separator run as one ``"\\0"`` edge."""
    out: list[str] = []
    for i, part in enumerate(p for p in _SEP_RE.split(term.lower().strip()) if p):
        if i:
            out.append("\0")
        out.extend(part)
    return out


def trie_regex(terms: Iterable[str]) -> str:
    """One regex for many literal terms, factored as a trie.

    Why: Python's ``re`` tries every branch of a flat alternation at every position; a trie
    shares prefixes, so a position is rejected after one or two characters. Longer terms are
    tried first at each node, so the longest term wins; ends are word-bounded.
    """
    trie: dict = {}
    for term in terms:
        node = trie
        for tok in _tokens(term):
            node = node.setdefault(tok, {})
        node[""] = True

    def emit(node: dict) -> str:
        alts = []
        for key in sorted(k for k in node if k):
            edge = _SEP_CLASS if key == "\0" else re.escape(key)
            alts.append(edge + emit(node[key]))
        if "" in node:
            alts.append(r"(?![a-z0-9])")
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(trie) if trie else ""


_REGEX_META = set("\\.^$*+?{}[]|()")


def _literal_prefix(pattern: str) -> str:
    """Literal text every match of ``pattern`` starts with ("" when unsure).

    Conservative: the run of plain characters before the first regex metacharacter, less its
    last character when a quantifier follows, and nothing at all when the pattern has a
    top-level alternation (``a|b`` need not start with ``a``).
    """
    depth = 0
    in_class = escaped = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            return ""
    run = ""
    for i, ch in enumerate(pattern):
        if ch in _REGEX_META:
            if ch in "?*{":
                run = run[:-1]
            break
        run = pattern[: i + 1]
    return run


def _key(text: str) -> str:
    return _SEP_RE.sub("", text.lower())


class Lexicon:
    """All dictionaries of a protocol compiled into one scanner.

    Parameters
    ----------
    dictionaries
        The dictionaries to match; a term may belong to several (e.g. "SBRT" is both
        radiotherapy and stereotactic technology), and every owner gets a hit.
    """

    def __init__(self, dictionaries: Iterable[Dictionary]) -> None:
        self.dictionaries = {d.name: d for d in dictionaries}
        self._literal: dict[str, list[tuple[str, str]]] = {}
        self._patterns: list[tuple[str, str, str]] = []
        # "stop" entries (attrs {stop: "yes"}) only shadow a shorter term of their dictionary:
        # the longest match wins, so "radiation pneumonitis" is found and then dropped instead
        # of leaving "radiation" (a treatment) to match inside it.
        self._stop = {
            (d.name, e.label)
            for d in self.dictionaries.values()
            for e in d.entries
            if e.attrs.get("stop") == "yes"
        }
        for d in self.dictionaries.values():
            for entry in d.entries:
                for term in entry.terms:
                    owners = self._literal.setdefault(_key(term), [])
                    if (d.name, entry.label) not in owners:
                        owners.append((d.name, entry.label))
                for pattern in entry.patterns:
                    try:
                        compiled = re.compile(pattern)
                    except re.error as exc:
                        raise ConfigError(
                            f"dictionary {d.name!r}, entry {entry.label!r}: bad pattern "
                            f"{pattern!r} ({exc})"
                        ) from None
                    if compiled.groups:
                        raise ConfigError(
                            f"dictionary {d.name!r}, entry {entry.label!r}: pattern {pattern!r} "
                            "must use (?:...) groups, not capturing groups"
                        )
                    self._patterns.append((d.name, entry.label, pattern))
        self._inherit_nested()
        terms = [t for d in self.dictionaries.values() for e in d.entries for t in e.terms]
        word_terms = [t for t in terms if t[:1].isalnum()]
        word = trie_regex(word_terms)
        other = trie_regex(t for t in terms if not t[:1].isalnum())
        literal_rx = "|".join(x for x in (f"(?<![a-z0-9]){word}" if word else "", other) if x)
        self._regex = re.compile(literal_rx or r"(?!x)x")
        # Faster equivalent of ``_regex`` when every term starts and ends with a letter or
        # digit: consume the non-alphanumeric character before the word instead of looking
        # back at it. A pattern that starts with a character set lets ``re`` skip to the next
        # candidate in C rather than attempting a match at every position (about a fifth of
        # the scanning time). The text's first word, with nothing before it, is matched
        # separately by ``_head``. Terms ending in punctuation could end right before the next
        # term's word and steal its leading character, so they keep the general scanner.
        self._head: re.Pattern[str] | None = None
        self._consuming: re.Pattern[str] | None = None
        ends_alnum = all(_SEP_RE.sub("", t.lower())[-1:].isalnum() for t in word_terms)
        if word and not other and ends_alnum:
            self._head = re.compile(word)
            self._consuming = re.compile(f"[^a-z0-9]{word}")
        # owners of a matched text (the same few hundred strings recur in every record)
        self._owners: dict[str, list[tuple[str, str]]] = {}
        # Patterns run one by one: in one alternation they would defeat re's literal-prefix
        # search. Write them to start with a literal character where possible.
        self._pattern_rx = [(d, label, re.compile(p)) for d, label, p in self._patterns]
        # a pattern's leading literal text: absent from a text (a fast ``in`` test), the
        # pattern cannot match there, and its slower ``finditer`` is skipped
        self._pattern_prefix = [_literal_prefix(p) for _, _, p in self._patterns]

    def _inherit_nested(self) -> None:
        """Give a long term the owners of the shorter terms of *other* dictionaries inside it.

        Why: the scanner takes the longest match, so "stereotactic radiotherapy" (a dose term)
        would hide "stereotactic" (a technology term) and "radiotherapy". Terms of the same
        dictionary are not inherited: "non-small cell lung" must not also mean "small cell lung".
        """
        extra: dict[str, list[tuple[str, str]]] = {}
        for key_term in [t for d in self.dictionaries.values() for e in d.entries for t in e.terms]:
            tokens = [p for p in _SEP_RE.split(key_term.lower().strip()) if p]
            key = "".join(tokens)
            mine = {d for d, _ in self._literal.get(key, ())}
            for i in range(len(tokens)):
                for j in range(i + 1, len(tokens) + 1):
                    if j - i == len(tokens):
                        continue
                    for owner in self._literal.get("".join(tokens[i:j]), ()):
                        if owner[0] not in mine:
                            extra.setdefault(key, []).append(owner)
        for key, owners in extra.items():
            current = self._literal[key]
            for owner in owners:
                if owner not in current:
                    current.append(owner)

    def scan_text(
        self, text: str, lower: str | None = None
    ) -> Iterator[tuple[str, str, int, int, str]]:
        """Yield (dictionary, label, start, end, lowered text) for every match in ``text``."""
        if lower is None:
            lower = text.lower()
        for matched, start, end in self._literal_matches(lower):
            owners = self._owners.get(matched)
            if owners is None:
                owners = self._literal.get(_key(matched), [])
                if self._stop:
                    owners = [o for o in owners if o not in self._stop]
                self._owners[matched] = owners
            for d, label in owners:
                yield d, label, start, end, lower
        for (d, label, rx), prefix in zip(self._pattern_rx, self._pattern_prefix, strict=True):
            if prefix and prefix not in lower:
                continue
            for m in rx.finditer(lower):
                yield d, label, m.start(), m.end(), lower

    def only_stop_phrases(self, text: str, dictionary: str) -> bool:
        """Whether ``text`` names ``dictionary`` terms only inside its stop phrases.

        E.g. an intervention of registry type RADIATION named "Far Infrared Radiation": the
        type says radiation, the name says it is not radiotherapy.
        """
        lower = text.lower()
        stopped = False
        for d, _label, *_ in self.scan_text(text, lower):
            if d == dictionary:
                return False
        for matched, _start, _end in self._literal_matches(lower):
            owners = self._literal.get(_key(matched), ())
            stopped |= any(o in self._stop and o[0] == dictionary for o in owners)
        return stopped

    def _literal_matches(self, lower: str) -> Iterator[tuple[str, int, int]]:
        """(matched text, start, end) of every dictionary term in ``lower``, left to right."""
        if self._consuming is None or self._head is None:
            for m in self._regex.finditer(lower):
                yield m.group(), m.start(), m.end()
            return
        pos = 0
        m = self._head.match(lower)
        if m is not None:
            yield m.group(), 0, m.end()
            pos = m.end()
        for m in self._consuming.finditer(lower, pos):
            start = m.start() + 1
            yield m.group()[1:], start, m.end()

    def scan(self, fields: Iterable[TextField], *, lazy: bool = False) -> list[Hit]:
        """Hits over study fields, each with its field, evidence snippet and negation flag.

        All fields are joined (blank-line separated, which also ends any sentence for the
        negation check) and scanned in one pass: a record has dozens of short fields, and one
        long ``finditer`` costs far less than many short ones. ``lazy`` leaves ``negated``
        undecided (None; see :meth:`Hit.decided`): the negation check costs as much as the
        scan itself, and most hits are never asked for.
        """
        fields = list(fields)
        if not fields:
            return []
        joined = "\n\n".join(f.text for f in fields)
        lower = joined.lower()
        if len(lower) != len(joined):  # case folding changed lengths: scan field by field
            return [h for f in fields for h in self._scan_one(f)]  # (never lazy: rare)
        offsets = []
        position = 0
        for f in fields:
            offsets.append(position)
            position += len(f.text) + 2
        ranks = [_rank(f.kind) for f in fields]
        hits: list[Hit] = []
        append = hits.append
        single = len(fields) == 1
        for d, label, start, end, _ in self.scan_text(joined, lower):
            i = 0 if single else bisect_right(offsets, start) - 1
            field = fields[i]
            base = offsets[i]
            # tuple.__new__ directly: the same Hit as Hit(...), without the Python-level
            # __new__ wrapper (this runs for every match of every record)
            append(
                _new_tuple(
                    Hit,
                    (
                        d,
                        label,
                        field.kind,
                        field.path,
                        field.text,
                        None if lazy else is_negated(lower, start, end),
                        field.placebo,
                        start - base,
                        end - base,
                        ranks[i],
                        lower,
                        base,
                    ),
                )
            )
        return hits

    def _scan_one(self, field: TextField) -> list[Hit]:
        hits = []
        for d, label, start, end, lower in self.scan_text(field.text):
            source = field.text if len(lower) == len(field.text) else lower
            hits.append(
                Hit(
                    d,
                    label,
                    field.kind,
                    field.path,
                    source,
                    is_negated(lower, start, end),
                    field.placebo,
                    start,
                    end,
                    _rank(field.kind),
                )
            )
        return hits


def snippet(text: str, start: int, end: int, width: int = 40) -> str:
    """The matched text with a little context, for evidence."""
    lo = max(0, start - width)
    hi = min(len(text), end + width)
    prefix = "…" if lo else ""
    suffix = "…" if hi < len(text) else ""
    return f"{prefix}{text[lo:hi]}{suffix}".replace("\n", " ")


class StudyText:
    """A study's fields and lexicon hits, shared by every rule of one record.

    Fields are scanned on first use, kind by kind: many records are settled by their dates
    or conditions, and scanning is the main cost per record.
    """

    __slots__ = ("_by_dict", "_fields", "_lexicon", "_pending", "hits", "study")

    def __init__(self, study: dict, lexicon: Lexicon) -> None:
        self.study = study
        self._lexicon = lexicon
        self._fields: list[TextField] | None = None
        self._pending: list[TextField] = []
        #: every hit so far, in scan order (``negated`` may be undecided: see Hit.decided)
        self.hits: list[Hit] = []
        self._by_dict: dict[str, list[Hit]] = {}

    @property
    def fields(self) -> list[TextField]:
        """All text fields (extracted on first use: date-screened records never need them)."""
        if self._fields is None:
            self._fields = study_fields(self.study)
            self._pending = list(self._fields)
        return self._fields

    @classmethod
    def build(cls, study: dict, lexicon: Lexicon) -> StudyText:
        return cls(study, lexicon)

    def _ensure(self, kinds: set[str] | None) -> None:
        if self._fields is None:
            self.fields  # noqa: B018 - builds the field list and the pending queue
        if not self._pending:
            return
        todo = [f for f in self._pending if kinds is None or f.kind in kinds]
        if todo:
            new = self._lexicon.scan(todo, lazy=True)
            self.hits.extend(new)
            for hit in new:
                self._by_dict.setdefault(hit.dictionary, []).append(hit)
            done = {id(f) for f in todo}
            self._pending = [f for f in self._pending if id(f) not in done]

    def texts(self, kinds: Iterable[str]) -> list[TextField]:
        """The fields of the given kinds (for rules with their own parsers)."""
        wanted = set(kinds)
        return [f for f in self.fields if f.kind in wanted]

    def find(
        self,
        dictionary: str,
        kinds: Iterable[str] | None = None,
        *,
        include_negated: bool = False,
        include_placebo: bool = True,
    ) -> list[Hit]:
        """Hits of ``dictionary`` in fields of the given kinds, best-ranked fields first."""
        allowed = set(kinds) if kinds is not None else None
        self._ensure(allowed)
        found = self._by_dict.get(dictionary)
        if not found:
            return []
        out = []
        for i, h in enumerate(found):
            if (allowed is not None and h.kind not in allowed) or (
                not include_placebo and h.placebo
            ):
                continue
            if h.negated is None:  # decide once, keep the decided hit
                h = found[i] = h.decided()
            if include_negated or not h.negated:
                out.append(h)
        out.sort(key=_by_confidence, reverse=True)
        return out

    def scanned(self, dictionaries: Iterable[str]) -> list[Hit]:
        """Hits of these dictionaries in the fields scanned so far (scans nothing new).

        ``negated`` may be undecided (None): call :meth:`Hit.decided` on the ones you keep.
        """
        return [h for d in dictionaries for h in self._by_dict.get(d, ())]
