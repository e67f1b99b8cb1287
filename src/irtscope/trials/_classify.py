"""Classification: one long-form row per (trial, variable, value) with field, evidence, confidence.

Why long form: several variables are multi-valued (countries, ICI drugs, innovation
subcategories), and the report needs evidence per value. Each classifier is a small function
of one record returning ``(value, field, evidence, confidence)`` tuples; registry-coded fields
(phase, status, design...) map one-to-one with confidence 1, text-derived ones carry the rank
of the field they were found in. Structured fields outrank free text: ICI drugs named in the
interventions or arms win over drugs named only in a summary, and placebo arms never count.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from irtscope.trials._protocol import Protocol
from irtscope.trials._screen import (
    CompiledProtocol,
    compile_protocol,
    parse_partial_date,
    registration_date,
)
from irtscope.trials._text import (
    Hit,
    Lexicon,
    StudyText,
    TextField,
    clause_break,
    gc_paused,
    get_path,
    is_negated,
    snippet,
    trie_regex,
)

__all__ = ["CLASS_COLUMNS", "classify_one", "classify_studies"]

CLASS_COLUMNS = ["nct_id", "variable", "value", "field", "evidence", "confidence"]
_CHUNK_ROWS = 200_000  # long-form rows held as tuples before they become a frame
NOT_REPORTED = "not reported"

Row = tuple[str, str, str, float]  # value, field, evidence, confidence

_PHASES = {
    "EARLY_PHASE1": "early 1",
    "PHASE1": "1",
    "PHASE2": "2",
    "PHASE3": "3",
    "PHASE4": "4",
    "NA": "NA",
}
_COMBINED_PHASES = {("1", "2"): "1/2", ("2", "3"): "2/3"}
_STATUS = {
    "ACTIVE_NOT_RECRUITING": "active not recruiting",
    "NOT_YET_RECRUITING": "not yet recruiting",
    "ENROLLING_BY_INVITATION": "enrolling by invitation",
}
_FUNDER = {
    "INDUSTRY": "industry",
    "NIH": "NIH",
    "NETWORK": "network",
    "FED": "FED",
    "OTHER_GOV": "other gov",
    "INDIV": "individual",
    "OTHER": "other",
    "UNKNOWN": "unknown",
}
_PURPOSE = {
    "TREATMENT": "treatment",
    "SUPPORTIVE_CARE": "supportive care",
    "PREVENTION": "prevention",
    "DIAGNOSTIC": "diagnostic",
    "BASIC_SCIENCE": "basic science",
    "SCREENING": "screening",
    "HEALTH_SERVICES_RESEARCH": "health services research",
    "DEVICE_FEASIBILITY": "other",
    "ECT": "other",
    "OTHER": "other",
}
_ALLOCATION = {"RANDOMIZED": "randomised", "NON_RANDOMIZED": "non-randomised", "NA": "NA"}
_MODEL = {
    "SINGLE_GROUP": "single group",
    "PARALLEL": "parallel",
    "SEQUENTIAL": "sequential",
    "CROSSOVER": "crossover",
    "FACTORIAL": "factorial",
}
_MASKING = {m: m.lower() for m in ("NONE", "SINGLE", "DOUBLE", "TRIPLE", "QUADRUPLE")}
_AGES = ("CHILD", "ADULT", "OLDER_ADULT")
_ELIGIBILITY_HEAD = 1200  # characters of inclusion criteria read for stage phrases
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_AFFILIATION = "sponsorCollaboratorsModule.responsibleParty.investigatorAffiliation"
#: a record's own statement of its centres (group 1 set: multicentre)
_CENTRES = re.compile(
    r"(?<![a-z])(?:(multi[\s-]?(?:cent(?:er|re|ric)|institution(?:al)?|site|national)|"
    r"multiple (?:cent(?:er|re)s|institutions|sites))|"
    r"(?:single|one|mono)[\s-]?(?:cent(?:er|re|ric)|institution(?:al)?)|monocentric)(?![a-z])"
)
#: "in 3-5 fractions", "5 fractions": a fraction count stated without a dose
_FRACTION_COUNT = re.compile(
    r"(?<![\d.])(\d{1,2})(?:\s*(?:-|–|to)\s*\d{1,2})?\s*(?:fractions|fx)\b"
)
_ENROLLMENT_BINS = ((50, "<50"), (100, "50-99"), (200, "100-199"), (500, "200-499"))

#: text kinds read per variable group, strongest first.
_RT_KINDS = ("intervention", "arm", "title", "keyword", "summary", "primary_outcome", "description")
_POP_KINDS = ("title", "condition", "keyword", "intervention", "arm", "summary", "primary_outcome")
_DRUG_KINDS = ("intervention", "arm")
_DRUG_FALLBACK = ("title", "keyword", "summary")

_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "1": 1, "2": 2, "3": 3, "4": 4}
#: "stage IIIB/C or IV", "stage IIIB (locally advanced) or IV", "stage IIIB IV": sub-stage
#: letter lists, a short parenthetical or a bare space may sit between the stages of a mention.
_STAGE_RX = re.compile(
    r"(?:stages?|staging,)\s*[\(\[]?\s*((?:(?:iv|i{1,3}|[1-4])(?:[abc](?:\s*/\s*[abc](?![a-z0-9]))*\d?)?"
    r"(?![a-z0-9])(?:\s*\([^()]{0,40}\))?"
    r"(?:(?:\s*(?:-|–|—|to|through|or|and|/|,|&)\s*|\s+(?=(?:iv|i{1,3})[abc]?(?![a-z0-9])))"
    r"(?:stages?\s*)?)?)+)"
)
_STAGE_NUM = re.compile(r"(?<![a-z0-9])(iv|i{1,3}|[1-4])(?:[abc]\d?)?(?![a-z0-9])")
_PARENTHETICAL = re.compile(r"\([^()]*\)")
_STAGE_GROUPS = {
    (1, 1): "I",
    (1, 2): "I-II",
    (1, 3): "I-III",
    (2, 3): "II-III",
    (2, 4): "II-IV",
    (3, 3): "III",
    (3, 4): "III-IV",
    (4, 4): "IV",
    # ranges the published vocabulary lacks, mapped to the nearest published group
    (2, 2): "I-II",
    (1, 4): "II-IV",
}
_SCHEDULES = (
    # (regex, kind): total dose in n fractions / n fractions of d / d x n / d per fraction
    (
        re.compile(
            r"(\d+(?:\.\d+)?)\s*gy\b[^.;\d]{0,30}?(?:\bin|/|\bover)\s*(\d+)\s*"
            r"(?:daily\s*)?(?:fractions?|fx|f)(?![a-z])"
        ),
        "total_n",
    ),
    (re.compile(r"(\d+)\s*(?:fractions?|fx)\s*(?:of|x|×)\s*(\d+(?:\.\d+)?)\s*gy"), "n_dose"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*gy\s*(?:x|×|\*)\s*(\d+)(?![\d.]*\s*gy)"), "dose_n"),
    (re.compile(r"(\d+(?:\.\d+)?)\s*gy\s*(?:per|/|each|a|in one|in a single)\s*fraction"), "dose"),
    # "a radiation dose of 4 Gy for a total of 5 courses", "8 Gy for 3 sessions"
    (
        re.compile(
            r"(\d+(?:\.\d+)?)\s*gy\b[^.;\d]{0,12}?\bfor\s+(?:a\s+total\s+of\s+)?(\d+)\s*"
            r"(?:courses|sessions|treatments|fractions|fx)\b"
        ),
        "dose_n",
    ),
    # "a single 12 Gy dose", "single fraction of 20 Gy"
    (re.compile(r"\bsingle\s+(?:fraction\s+of\s+)?(\d+(?:\.\d+)?)\s*gy\b"), "single"),
)


def _enum(value: object, mapping: dict[str, str], path: str) -> list[Row]:
    if value is None or value == "":
        return [(NOT_REPORTED, path, "", 1.0)]
    return [(mapping.get(str(value), str(value).lower().replace("_", " ")), path, str(value), 1.0)]


def _stage_mentions(text: str) -> Iterator[tuple[set[int], tuple[int, int]]]:
    """Each explicit "stage ..." mention's stages and span, one mention at a time."""
    for m in _STAGE_RX.finditer(text):
        nums = [_ROMAN[n] for n in _STAGE_NUM.findall(_PARENTHETICAL.sub(" ", m.group(1)))]
        if not nums:
            continue
        if re.search(r"-|–|—|to|through", m.group(1)) and len(nums) >= 2:
            yield set(range(min(nums), max(nums) + 1)), m.span()
        else:
            yield set(nums), m.span()


def _stage_groups(text: str) -> tuple[set[int], tuple[int, int]]:
    """Stages named in explicit "stage ..." mentions, and where the first one is."""
    stages: set[int] = set()
    where = (0, 0)
    for m in _STAGE_RX.finditer(text):
        nums = [_ROMAN[n] for n in _STAGE_NUM.findall(_PARENTHETICAL.sub(" ", m.group(1)))]
        if not nums:
            continue
        if not stages:
            where = m.span()
        if re.search(r"-|–|—|to|through", m.group(1)) and len(nums) >= 2:
            stages.update(range(min(nums), max(nums) + 1))
        else:
            stages.update(nums)
    return stages, where


class _Classifier:
    """All classifiers of one compiled protocol (dictionary lookups prepared once)."""

    def __init__(self, cp: CompiledProtocol) -> None:
        self.cp = cp
        p = cp.protocol
        countries = cp.dictionaries[p.countries_dictionary]
        self.country_lookup: dict[str, tuple[str, str | None]] = {}
        for entry in countries.entries:
            for term in (entry.label, *entry.terms):
                self.country_lookup[_norm(term)] = (entry.label, entry.attrs.get("continent"))
        self._country_cache: dict[str, tuple[str, str | None]] = {}
        sponsors = cp.dictionaries[p.sponsors_dictionary]
        self.sponsor_overrides = {_norm(k): v for k, v in sponsors.overrides.items()}
        self.sponsor_rx = [
            (e.label, re.compile(r"(?<![a-z0-9])" + trie_regex(e.terms)))
            for e in sponsors.entries
            if e.terms
        ]
        places = cp.dictionaries.get(p.places_dictionary or "")
        continents = {e.label: e.attrs.get("continent") for e in countries.entries}
        self.place_rx = [
            (e.label, continents.get(e.label), re.compile(r"(?<![a-z0-9])" + trie_regex(e.terms)))
            for e in (places.entries if places else ())
            if e.terms
        ]
        why = cp.dictionaries[p.why_stopped_dictionary]
        self.why_rx = [
            (e.label, re.compile(r"(?<![a-z0-9])" + trie_regex(e.terms)))
            for e in why.entries
            if e.terms
        ]
        self.rt_dictionary = next(
            (c.dictionary for c in p.criteria if c.id == "no_radiotherapy" and c.dictionary),
            "radiotherapy",
        )
        drugs = cp.dictionaries[p.drugs_dictionary]
        self.drug_generic = {e.label for e in drugs.entries if e.attrs.get("generic") == "yes"}
        self.drug_target = {e.label: e.attrs.get("target") for e in drugs.entries}
        # entries whose generic terms ("dose escalation", "twice daily") only count near a
        # mention of another dictionary (attrs.context, e.g. radiotherapy)
        self.context = {
            name: {e.label: e.attrs["context"] for e in d.entries if "context" in e.attrs}
            for name, d in cp.dictionaries.items()
        }
        self.context_dicts = {c for m in self.context.values() for c in m.values()}
        # dose terms that are technique names ("sbrt" -> hypofractionated, "srs" -> single
        # fraction): entries with attrs.implied_by name the technique dictionary
        self.implied_terms: dict[str, set[str]] = {}
        dose = cp.dictionaries.get(p.taxonomy.get("rt_dose", ""))
        for e in dose.entries if dose else ():
            tech = cp.dictionaries.get(e.attrs.get("implied_by", ""))
            if tech is not None:  # a term naming a technique ("stereotactic radiotherapy")
                self.implied_terms[e.label] = {_key_of(t) for te in tech.entries for t in te.terms}
        roles = {e.attrs.get("role"): e.label for e in dose.entries} if dose else {}
        self.low_dose_label = roles.get("low_dose", "")
        self.single_label = roles.get("single_fraction", "")
        stage = cp.dictionaries.get(p.taxonomy.get("stage", ""))
        self.stage_dict = stage.name if stage else None
        self.stage_lexicon = Lexicon([stage] if stage else [])
        self.stage_attrs = (
            {e.label: e.attrs.get("stages", "") for e in stage.entries} if stage else {}
        )
        self.stage_vague = (
            {e.label for e in stage.entries if e.attrs.get("vague") == "yes"} if stage else set()
        )

    # -- registry-coded variables -------------------------------------------------------
    def coded(self, study: dict, out: dict[str, list[Row]]) -> None:
        ps = study.get("protocolSection") or {}
        status = ps.get("statusModule") or {}
        design = ps.get("designModule") or {}
        info = design.get("designInfo") or {}
        out["status"] = _enum(status.get("overallStatus"), _STATUS, "statusModule.overallStatus")
        has = study.get("hasResults")
        out["has_results"] = [("yes" if has else "no", "hasResults", str(bool(has)), 1.0)]
        why = status.get("whyStopped")
        if why:
            low = why.lower()
            label = next((lab for lab, rx in self.why_rx if rx.search(low)), "other")
            out["why_stopped"] = [(label, "statusModule.whyStopped", why, 0.8)]
        phases = [_PHASES.get(x, x) for x in design.get("phases") or ()]
        if not phases:
            out["phase"] = [(NOT_REPORTED, "designModule.phases", "", 1.0)]
        else:
            key = tuple(sorted(phases))
            value = _COMBINED_PHASES.get(key, phases[0]) if len(key) > 1 else key[0]
            out["phase"] = [(value, "designModule.phases", ", ".join(design["phases"]), 1.0)]
        enrollment = (design.get("enrollmentInfo") or {}).get("count")
        if isinstance(enrollment, int):
            out["enrollment"] = [
                (str(enrollment), "designModule.enrollmentInfo.count", str(enrollment), 1.0)
            ]
            label = next((lab for limit, lab in _ENROLLMENT_BINS if enrollment < limit), ">=500")
            out["enrollment_bin"] = [
                (label, "designModule.enrollmentInfo.count", str(enrollment), 1.0)
            ]
        else:
            for var in ("enrollment", "enrollment_bin"):
                out[var] = [(NOT_REPORTED, "designModule.enrollmentInfo.count", "", 1.0)]
        out["primary_purpose"] = _enum(
            info.get("primaryPurpose"), _PURPOSE, "designModule.designInfo.primaryPurpose"
        )
        out["allocation"] = _enum(
            info.get("allocation"), _ALLOCATION, "designModule.designInfo.allocation"
        )
        out["intervention_model"] = _enum(
            info.get("interventionModel"), _MODEL, "designModule.designInfo.interventionModel"
        )
        masking = (info.get("maskingInfo") or {}).get("masking")
        out["masking"] = _enum(masking, _MASKING, "designModule.designInfo.maskingInfo.masking")
        dmc = (ps.get("oversightModule") or {}).get("oversightHasDmc")
        out["dmc"] = [
            (
                NOT_REPORTED if dmc is None else ("yes" if dmc else "no"),
                "oversightModule.oversightHasDmc",
                str(dmc),
                1.0,
            )
        ]
        ages = (ps.get("eligibilityModule") or {}).get("stdAges") or []
        present = [a for a in _AGES if a in ages]
        value = "+".join(a.lower().replace("_", " ") for a in present) or NOT_REPORTED
        out["age_groups"] = [(value, "eligibilityModule.stdAges", ", ".join(ages), 1.0)]
        sponsor = (ps.get("sponsorCollaboratorsModule") or {}).get("leadSponsor") or {}
        out["funder_type"] = _enum(
            sponsor.get("class") or "UNKNOWN",
            _FUNDER,
            "sponsorCollaboratorsModule.leadSponsor.class",
        )
        row = self.sponsor_type(sponsor.get("name") or "", sponsor.get("class") or "")
        party = (ps.get("sponsorCollaboratorsModule") or {}).get("responsibleParty") or {}
        affiliation = party.get("investigatorAffiliation")
        if row[0] == "other" and affiliation:
            # an individual investigator as lead sponsor: classify their affiliation instead
            alt = self.sponsor_type(affiliation, "")
            if alt[0] != "other":
                path = "sponsorCollaboratorsModule.responsibleParty.investigatorAffiliation"
                row = (alt[0], path, f"{row[2]} -> {alt[2]}", 0.7)
        out["sponsor_type"] = [row]
        self.geography(ps, out)
        if out["region"][0][0] == NOT_REPORTED and not out["country"]:
            self.sponsor_region(sponsor.get("name") or "", affiliation or "", out)

    def sponsor_type(self, name: str, klass: str) -> Row:
        """Sponsor type from the lead sponsor's name (override table, patterns) and class."""
        path = "sponsorCollaboratorsModule.leadSponsor"
        evidence = f"{name} [{klass}]"
        norm = _norm(name)
        if norm in self.sponsor_overrides:
            return (self.sponsor_overrides[norm], f"{path}.name (override table)", evidence, 1.0)
        if klass == "INDUSTRY":
            return ("company", f"{path}.class", evidence, 0.95)
        low = name.lower()
        for label, rx in self.sponsor_rx:
            m = rx.search(low)
            if m:
                return (label, f"{path}.name", f"{evidence}: '{m.group()}'", 0.85)
        if klass in {"NIH", "FED"}:
            return ("research institution", f"{path}.class", evidence, 0.8)
        return ("other", f"{path}.name", evidence, 0.3)

    def geography(self, ps: dict, out: dict[str, list[Row]]) -> None:
        """Countries (all), one region by the documented rule, and the multi-region flag.

        Rule: the region is the continent with the most trial sites; a tie goes to the
        continent of the first listed site. No sites -> "not reported".
        """
        locations = (ps.get("contactsLocationsModule") or {}).get("locations") or []
        path = "contactsLocationsModule.locations[].country"
        sites: Counter[str] = Counter()
        first: dict[str, int] = {}
        countries: dict[str, str] = {}
        # Counter keeps first-appearance order, so the tie rule needs no site index
        per_country = Counter([(loc.get("country") or "").strip() for loc in locations])
        for order, (raw, n_sites) in enumerate(per_country.items()):
            if not raw:
                continue
            found = self._country_cache.get(raw)
            if found is None:
                found = self.country_lookup.get(_norm(raw), (raw, None))
                self._country_cache[raw] = found
            name, continent = found
            countries.setdefault(name, raw)
            if continent:
                sites[continent] += n_sites
                first.setdefault(continent, order)
        out["country"] = [(name, path, raw, 1.0) for name, raw in countries.items()]
        if sites:
            region = max(sites, key=lambda c: (sites[c], -first[c]))
            evidence = ", ".join(f"{c}: {n} sites" for c, n in sites.most_common())
            out["region"] = [(region, path, evidence, 1.0 if len(sites) == 1 else 0.8)]
            out["multi_region"] = [("yes" if len(sites) > 1 else "no", path, evidence, 1.0)]
        else:
            evidence = "no sites" if not countries else f"unmapped: {', '.join(countries)}"
            out["region"] = [(NOT_REPORTED, path, evidence, 1.0)]
            out["multi_region"] = [(NOT_REPORTED, path, evidence, 1.0)]
        if locations:
            n = len(locations)
            out["centres"] = [
                (
                    "multi" if n > 1 else "single",
                    "contactsLocationsModule.locations",
                    f"{n} sites",
                    0.9,
                )
            ]
        else:
            out["centres"] = [(NOT_REPORTED, "contactsLocationsModule.locations", "no sites", 1.0)]

    def sponsor_region(self, name: str, affiliation: str, out: dict[str, list[Row]]) -> None:
        """Region from the lead sponsor's name, then the responsible party's affiliation.

        Why: a record without sites (withdrawn, not yet recruiting, or sites never entered)
        still says who runs it, and a reader takes the sponsor's country; the call is marked
        inferred and weaker than one from sites.
        """
        path = "sponsorCollaboratorsModule.leadSponsor.name"
        for text, where in ((name, path), (affiliation, _AFFILIATION)):
            low = text.lower()
            found = [
                (m.start(), country, continent, m.group())
                for country, continent, rx in self.place_rx
                if continent and (m := rx.search(low))
            ]
            if found:
                _, country, continent, matched = min(found)
                evidence = f"inferred from sponsor (no sites): '{matched}' in {text} -> {country}"
                out["country"] = [(country, f"{where} (inferred)", evidence, 0.6)]
                out["region"] = [(continent, f"{where} (inferred)", evidence, 0.6)]
                out["multi_region"] = [("no", f"{where} (inferred)", evidence, 0.6)]
                return

    def centres(self, st: StudyText, out: dict[str, list[Row]]) -> None:
        """Single/multi-centre: the record's own statement outranks the count of listed sites.

        Registries often list only the lead site of a multicentre trial ("A Multicenter Phase
        II Trial", one site listed); a record without sites and without a statement, whose
        sponsor says where it is, is taken as run by its sponsor alone (single, inferred).
        """
        for kinds in (("title",), ("summary",), ("description",)):
            for f in st.texts(kinds):
                low = f.text.lower()
                # cheap literal test first: the regex has no literal prefix to search for
                if (
                    "multi" not in low
                    and "single" not in low
                    and "mono" not in low
                    and ("one cent" not in low)
                ):
                    continue
                m = _CENTRES.search(low)
                if m is None:
                    continue
                value = "single" if m.group(1) is None else "multi"
                text = snippet(f.text, m.start(), m.end())
                out["centres"] = [(value, f.path, f"stated: {text}", 0.85)]
                return
        inferred = out["region"][0][1].endswith("(inferred)")
        if out["centres"][0][0] == NOT_REPORTED and inferred:
            path = "sponsorCollaboratorsModule.leadSponsor (inferred)"
            evidence = f"no sites, no multicentre statement; run by {out['region'][0][2]}"
            out["centres"] = [("single", path, evidence, 0.5)]

    # -- text-derived variables --------------------------------------------------------
    def has_radiotherapy(self, st: StudyText) -> bool:
        """Radiotherapy categories are only read for trials that give radiotherapy."""
        interventions = get_path(st.study, "protocolSection.armsInterventionsModule.interventions")
        if any(iv.get("type") == "RADIATION" for iv in interventions or ()):
            return True
        return bool(st.find(self.rt_dictionary, (*_DRUG_KINDS, *_DRUG_FALLBACK)))

    def drugs(self, st: StudyText, out: dict[str, list[Row]]) -> None:
        """ICI drugs named (structured fields first; placebo arms and negations never count)."""
        name = self.cp.protocol.drugs_dictionary
        for kinds in (_DRUG_KINDS, _DRUG_FALLBACK):
            hits = [
                h
                for h in st.find(name, kinds, include_placebo=False)
                if h.label not in self.drug_generic
            ]
            if hits:
                break
        rows: dict[str, Row] = {}
        targets: dict[str, Row] = {}
        for h in hits:
            if h.label not in rows:
                rows[h.label] = (h.label, h.path, h.text, h.confidence)
            target = self.drug_target.get(h.label)
            if target and target not in targets:
                targets[target] = (target, h.path, f"{h.label}: {h.text}", h.confidence)
        out["ici_drug"] = list(rows.values())
        out["ici_target"] = list(targets.values())

    def category_hits(self, st: StudyText, variable: str, kinds: Iterable[str]) -> list[Hit]:
        """The hits that count for ``variable`` (best-ranked fields first).

        Dropped: negated mentions, mentions under a "non-" prefix ("non-ablative
        radiotherapy (6 Gy x 5)" is not stereotactic RT), and generic terms that need a nearby
        mention of another dictionary (attrs.context) without one in the same clause.
        """
        dictionary = self.cp.protocol.taxonomy.get(variable)
        if dictionary is None:
            return []
        context = self.context.get(dictionary, {})
        near: list[Hit] | None = None
        kept: list[Hit] = []
        for h in st.find(dictionary, kinds):
            if _after_non(h):
                continue
            needs = context.get(h.label)
            if needs:
                if near is None:
                    near = st.scanned(self.context_dicts)
                # negation last: deciding it is the costly test
                if not any(
                    n.dictionary == needs
                    and n.path == h.path
                    and _same_clause(h, n)
                    and not n.decided().negated
                    for n in near
                ):
                    continue
            kept.append(h)
        return kept

    def categories(
        self, st: StudyText, variable: str, kinds: Iterable[str], out: dict[str, list[Row]]
    ) -> None:
        if variable not in self.cp.protocol.taxonomy:
            return
        out[variable] = _rows(self.category_hits(st, variable, kinds))

    def dose(self, st: StudyText, out: dict[str, list[Row]]) -> None:
        """Dose/fractionation: dictionary terms plus explicit schedules (dose per fraction).

        A technique implies a fractionation (SBRT: hypofractionated; SRS: single fraction),
        but what the record states outranks what a technique implies:
        - an intervention's other names are synonyms of its name (registry thesaurus lists:
          "Stereotactic Radiosurgery; ...; Stereotactic Radiotherapy"): a fractionation implied
          only there, and different from the one its name implies, does not count;
        - explicit schedules ("3 x 18 Gy", "in 3-5 fractions") replace implied fractionations
          none of them has (a "radiosurgery" keyword on a 3-fraction SABR trial);
        - "low-dose" wording in a field whose explicit schedules are no low-dose schedule
          ("low-dose SBRT, 6 Gy x 5") is relative, not low-dose RT.
        """
        hits = self.category_hits(st, "rt_dose", _RT_KINDS)
        schedules: list[tuple[str, str, str]] = []  # (label or "", path, matched text)
        counts: list[int] = []  # fraction counts stated without a dose
        for f in st.texts(_RT_KINDS):
            low = f.text.lower()
            if "fraction" in low or "fx" in low:
                for m in _FRACTION_COUNT.finditer(low):
                    if not is_negated(low, m.start(), m.end()):
                        counts.append(int(m.group(1)))
            if "gy" not in low:
                continue
            for rx, kind in _SCHEDULES:
                for m in rx.finditer(low):
                    if is_negated(low, m.start(), m.end()):
                        continue
                    label = _schedule_label(m, kind)
                    schedules.append((label or "", f.path, m.group()))
                    if kind == "single":
                        counts.append(1)
                    elif kind != "dose":
                        counts.append(_schedule_n(m, kind))
        stated = {label for label, _, _ in schedules if label}
        multi = any(n > 1 for n in counts)
        kept = []
        for h in hits:
            if h.label == self.low_dose_label:
                own = [label for label, path, _ in schedules if path == h.path]
                if own and self.low_dose_label not in own:
                    continue
            if self._implied(h):
                if h.kind == "intervention" and self._synonym_conflict(h, hits):
                    continue
                if (
                    h.label == self.single_label
                    and multi
                    and 1 not in counts
                    and h.label not in stated
                    and not any(x.label == h.label and not self._implied(x) for x in hits)
                ):
                    continue
            kept.append(h)
        rows = {r[0]: r for r in _rows(kept)}
        for label, path, text in schedules:
            if label and label not in rows:
                rows[label] = (label, path, text, 0.9)
        out["rt_dose"] = list(rows.values())

    def _implied(self, hit: Hit) -> bool:
        key = _key_of(hit.matched)
        return any(t in key for t in self.implied_terms.get(hit.label, ()))

    def _synonym_conflict(self, hit: Hit, hits: list[Hit]) -> bool:
        """``hit`` is implied by an other name of an intervention whose name implies another."""
        name_end = hit.source.find("; ")
        if name_end < 0 or hit.start < name_end:
            return False
        return any(
            x.path == hit.path and x.start < name_end and x.label != hit.label and self._implied(x)
            for x in hits
        )

    def _stage_hits(self, st: StudyText, kinds: tuple[str, ...]) -> list[Hit]:
        """Stage-phrase hits; long eligibility texts go through a small stage-only scanner."""
        if not self.stage_dict:
            return []
        hits = st.find(self.stage_dict, [k for k in kinds if k != "eligibility"])
        if "eligibility" in kinds:
            # the disease and its stage come first in inclusion criteria; the long tail
            # (organ function, contraception...) never names a stage
            heads = [
                TextField(f.kind, f.path, f.text[:_ELIGIBILITY_HEAD])
                for f in st.texts(("eligibility",))
            ]
            hits += [h for h in self.stage_lexicon.scan(heads) if not h.negated]
        return hits

    def stage(self, st: StudyText, out: dict[str, list[Row]]) -> None:
        """Stage group from conditions/keywords/titles, then eligibility and summary."""
        tiers = (("condition", "keyword", "title"), ("eligibility", "summary"))
        for conf, kinds in zip((0.9, 0.6), tiers, strict=True):
            stage_hits = self._stage_hits(st, kinds)
            specials = [
                h for h in stage_hits if h.label.startswith("special:") and not _after_non(h)
            ]
            labels = {h.label.removeprefix("special:") for h in specials}
            if "brain" in labels and conf > 0.8:
                h = next(h for h in specials if h.label == "special:brain")
                out["stage"] = [("brain/leptomeningeal metastasis", h.path, h.text, conf)]
                return
            oligo = labels - {"brain"}
            if oligo:
                if oligo == {"oligoprogressive"}:
                    value = "oligoprogressive"
                elif "oligoresidual" in oligo:
                    value = "oligometastatic/oligoresidual"
                else:
                    value = "oligometastatic/oligoprogressive"
                h = next(h for h in specials if h.label != "special:brain")
                out["stage"] = [(value, h.path, h.text, conf)]
                return
            stages, evidence = _explicit_stages(st, kinds)
            if stages and "eligibility" not in kinds:
                # the inclusion criteria state the full range where a title names its core
                # ("Stage I NSCLC" titled, "Stage I-IIA tumours <= 5 cm" eligible: I-II)
                # (one mention covering them: "recurrent stage IIIB" beside "stage IV" in
                # the criteria is an allowance, not the range)
                for f in st.texts(("eligibility",)):
                    low = f.text.lower()
                    for wider, where in _stage_mentions(low):
                        if wider > stages:
                            text = f.text if len(low) == len(f.text) else low
                            stages, evidence = wider, [(f.path, snippet(text, *where))]
                            break
            if not stages:
                phrases = [
                    h
                    for h in stage_hits
                    if not h.label.startswith("special:") and not _after_non(h)
                ]
                # a vague phrase ("advanced": III-IV) gives way to a specific one in the same
                # fields ("advanced" title, "metastatic" conditions: IV)
                if any(h.label not in self.stage_vague for h in phrases):
                    phrases = [h for h in phrases if h.label not in self.stage_vague]
                for h in phrases:
                    span = self.stage_attrs.get(h.label, "")
                    nums = [_ROMAN[x.lower()] for x in re.findall(r"iv|i{1,3}", span.lower())]
                    if nums:
                        stages.update(range(min(nums), max(nums) + 1))
                        evidence.append((h.path, h.text))
                conf *= 0.8
                if stages and "eligibility" not in kinds:
                    # A vague phrase in the title or conditions ("Resectable NSCLC": I-II by
                    # the dictionary) is weaker than an explicit range in the inclusion criteria
                    # ("resectable stage IB-IIIA"): the explicit range wins when there is one.
                    explicit, where = _explicit_stages(st, ("eligibility",))
                    if explicit:
                        stages, evidence = explicit, where
            if stages:
                value = _STAGE_GROUPS.get((min(stages), max(stages)), NOT_REPORTED)
                path, text = evidence[0]
                out["stage"] = [(value, path, text, round(conf, 3))]
                return
        out["stage"] = [(NOT_REPORTED, "conditions/keywords/title/eligibility/summary", "", 0.5)]


def _rows(hits: Iterable[Hit]) -> list[Row]:
    """One row per label: the first (best-ranked) hit's field, evidence and confidence."""
    rows: dict[str, Row] = {}
    for h in hits:
        if h.label not in rows:
            rows[h.label] = (h.label, h.path, h.text, h.confidence)
    return list(rows.values())


def _key_of(term: str) -> str:
    return _NON_ALNUM.sub("", term.lower())


def _schedule_n(m: re.Match[str], kind: str) -> int:
    try:
        return int(m.group(2) if kind in ("total_n", "dose_n") else m.group(1))
    except (ValueError, IndexError):
        return 0


def _explicit_stages(st: StudyText, kinds: tuple[str, ...]) -> tuple[set[int], list]:
    """Stages of explicit "stage ..." mentions in ``kinds`` (eligibility: inclusion part)."""
    stages: set[int] = set()
    evidence = []
    for f in st.texts(kinds):
        text = f.text
        low = text.lower()
        found, where = _stage_groups(low)
        if found:
            stages |= found
            evidence.append((f.path, snippet(text if len(low) == len(text) else low, *where)))
    return stages, evidence


def _same_clause(a: Any, b: Any, width: int = 100) -> bool:
    """Two hits close together with no sentence or clause break (. ; newline) between them."""
    lo, hi = sorted((a.start, b.start))
    if hi - lo > width:
        return False
    return not clause_break(a.source[lo:hi])


def _after_non(hit: Any) -> bool:
    """'non-metastatic', 'non-oligometastatic': the prefix negates the stage phrase."""
    before = hit.source[max(0, hit.start - 4) : hit.start].lower()
    return before.endswith(("non-", "non ", "non"))


def _schedule_label(m: re.Match[str], kind: str) -> str | None:
    """Fractionation category of one explicit schedule ("60 Gy in 30 fractions" -> None,
    "45 Gy in 30 fractions" -> hyperfractionated, "50 Gy in 5 fractions" -> hypofractionated)."""
    try:
        if kind == "total_n":
            total, n = float(m.group(1)), int(m.group(2))
            dose = total / n if n else 0.0
        elif kind == "n_dose":
            n, dose = int(m.group(1)), float(m.group(2))
            total = n * dose
        elif kind == "dose_n":
            dose, n = float(m.group(1)), int(m.group(2))
            total = n * dose
        elif kind == "single":
            dose, n = float(m.group(1)), 1
            total = dose
        else:
            dose, n, total = float(m.group(1)), 0, 0.0
    except (ValueError, ZeroDivisionError):
        return None
    if dose <= 0 or dose > 40 or n > 60:
        return None
    if n == 1 and dose >= 5:
        return "single fraction"
    if n and total <= 10 and dose <= 2.0:
        return "low-dose RT"
    if dose >= 2.5:
        return "hypofractionated"
    if n >= 20 and dose < 1.8:
        # "45 Gy in 30 fractions (twice daily)", CHART "54 Gy in 36 fractions": many small
        # fractions to a full dose; conventional schedules are 1.8-2.0 Gy per fraction
        return "hyperfractionated"
    return None


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(".", "").split())


_CLASSIFIERS: dict[int, _Classifier] = {}


def _classifier(cp: CompiledProtocol) -> _Classifier:
    found = _CLASSIFIERS.get(id(cp))
    if found is None:
        found = _CLASSIFIERS[id(cp)] = _Classifier(cp)
    return found


def classify_one(
    study: dict, cp: CompiledProtocol, st: StudyText | None = None
) -> dict[str, list[Row]]:
    """All variables of one record as ``{variable: [(value, field, evidence, confidence)]}``."""
    clf = _classifier(cp)
    st = st or cp.text(study)
    protocol = cp.protocol
    out: dict[str, list[Row]] = {}
    raw = registration_date(study, protocol)
    span = parse_partial_date(raw)
    year = span[0].year if span else None
    date_path = f"registration date ({protocol.date_field})"
    out["registration_year"] = [(str(year) if year else NOT_REPORTED, date_path, raw or "", 1.0)]
    out["period"] = [(protocol.period_of(year) or NOT_REPORTED, date_path, raw or "", 1.0)]
    clf.coded(study, out)
    clf.centres(st, out)
    clf.stage(st, out)
    clf.drugs(st, out)
    has_rt = clf.has_radiotherapy(st)
    for variable in protocol.taxonomy:
        if variable == "stage" or (variable.startswith("rt_") and not has_rt):
            continue
        if variable == "rt_dose":
            clf.dose(st, out)
        else:
            kinds = _RT_KINDS if variable.startswith("rt_") else _POP_KINDS
            clf.categories(st, variable, kinds, out)
    majors = [v for v in protocol.innovation_categories if out.get(v)]
    out["innovation_major_count"] = [
        (str(len(majors)), "innovation categories", ", ".join(majors), 1.0)
    ]
    return out


def classify_studies(
    studies: Iterable[dict],
    protocol: Protocol | str,
    overrides: Any = None,
    progress: Callable[[int, int | None, str], None] | None = None,
) -> Any:
    """Classify raw study dicts into the long-form table of ``docs/contracts.md``.

    Parameters
    ----------
    studies
        Raw API v2 study dicts (usually the included trials of a screening run).
    protocol
        A :class:`Protocol` or preset name / YAML path (taxonomy, periods, dictionaries).
    overrides
        Reviewer overrides (DataFrame, path or None); rows whose ``variable`` is not
        ``decision`` replace that variable's values and are marked ``overridden``.
    progress
        Optional callback ``(advance, total, description)``.

    Returns
    -------
    pandas.DataFrame
        Columns ``nct_id, variable, value, field, evidence, confidence, overridden``.
    """
    # The collector stays paused until the temporaries (rows, hits) are gone: re-enabled while
    # they are alive, its first pass walks every one of them (see gc_paused).
    with gc_paused():
        return _classify_studies(studies, protocol, overrides, progress)


def _classify_studies(
    studies: Iterable[dict],
    protocol: Protocol | str,
    overrides: Any,
    progress: Callable[[int, int | None, str], None] | None,
) -> Any:
    import pandas as pd

    from irtscope.trials._overrides import apply_class_overrides, load_overrides
    from irtscope.trials._protocol import load_protocol

    protocol = load_protocol(protocol)
    cp = compile_protocol(protocol)
    records: list[tuple[str, str, str, str, str, float]] = []
    append = records.append
    # Rows go into frames chunk by chunk: a row tuple costs more memory than its cells in a
    # frame, and holding every tuple until the end made them the peak of a large run.
    chunks: list[pd.DataFrame] = []
    n = 0
    with gc_paused():
        for n, study in enumerate(studies, start=1):
            nct = get_path(study, "protocolSection.identificationModule.nctId") or ""
            for variable, rows in classify_one(study, cp).items():
                for value, field, evidence, confidence in rows:
                    append((nct, variable, value, field, evidence, confidence))
            if len(records) >= _CHUNK_ROWS:
                chunks.append(pd.DataFrame.from_records(records, columns=CLASS_COLUMNS))
                records.clear()
            if progress is not None and n % 500 == 0:
                progress(500, None, "classifying")
    if progress is not None and n % 500:
        progress(n % 500, None, "classifying")
    if records or not chunks:
        chunks.append(pd.DataFrame.from_records(records, columns=CLASS_COLUMNS))
        records.clear()
    frame = chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)
    del chunks
    frame["overridden"] = False
    if overrides is not None:
        table = overrides if isinstance(overrides, pd.DataFrame) else load_overrides(overrides)
        frame = apply_class_overrides(frame, table)
    return frame
