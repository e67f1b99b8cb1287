"""CLI: ``irtscope trials screen | classify | review`` (registered by :mod:`irtscope.cli`).

Commands stay thin: read studies (from the store, or ``--input`` JSON files for a quick look
without a database), call the library, print a summary, optionally write a table and record
the run in the store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from irtscope._console import info, progress_bar
from irtscope._errors import DataError

ProtocolOpt = Annotated[
    str, typer.Option("--protocol", "-p", help="Preset name (nsclc-irt) or protocol YAML path.")
]
DbOpt = Annotated[
    Path | None, typer.Option("--db", help="Trials database (default: the user data dir).")
]
InputOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--input",
        "-i",
        help="Registry file(s) (API v2 JSON/JSONL, bulk zip or registry CSV; .gz ok) instead "
        "of the database.",
    ),
]
OverridesOpt = Annotated[
    Path | None, typer.Option("--overrides", help="Reviewer overrides (CSV or YAML).")
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", "-o", help="Write the table (.csv or .parquet).")
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Rebuild the landscape as it was at this snapshot (id, or YYYY-MM-DD: the latest "
        "snapshot dated on or before it; see 'irtscope trials snapshots'). Not recorded.",
    ),
]


def read_study_files(paths: list[Path]) -> list[dict]:
    """Raw studies from registry files, read by the same readers as ``trials import``.

    Any layout ``import`` accepts works here (JSON list, pages, JSONL, bulk zip, registry CSV;
    gzip detected by content). Unlike ``import``, which skips a bad record and goes on, a quick
    look should not silently screen part of a file: the first unreadable record raises.

    Raises
    ------
    DataError
        Naming the file, the position in it and the reason (missing file, truncated gzip,
        not JSON, CSV without the registry header...).
    """
    from irtscope.trials._sources_files import iter_file

    studies: list[dict] = []
    for path in paths:
        for record in iter_file(path):
            if record.error is not None:
                where = f", {record.position}" if record.position not in (None, "file") else ""
                raise DataError(f"{record.path}{where}: {record.error}")
            study = record.load()
            if not isinstance(study, dict) or not isinstance(study.get("protocolSection"), dict):
                raise DataError(f"{record.path}, {record.position}: not an API v2 study")
            studies.append(study)
    return studies


def existing_db(db: Path | None) -> Path:
    """The database a reading command uses; it must exist.

    Opening a missing path would create an empty database and report "0 trials", which
    reads like a result; a typo in ``--db`` should say so instead.

    Raises
    ------
    DataError
        When the file (``--db``, ``$IRTSCOPE_DB`` or the default) does not exist.
    """
    from irtscope.trials._store import default_db_path

    target = Path(db) if db is not None else default_db_path()
    if str(target) != ":memory:" and not target.is_file():
        raise DataError(
            f"no trials database at {target}: run 'irtscope trials import FILE --db {target}' "
            "or 'irtscope trials fetch' first"
        )
    return target


def _studies(
    db: Path | None, inputs: list[Path] | None, as_of: str | None = None
) -> tuple[list[dict], Any]:
    if inputs:
        if as_of is not None:
            raise DataError("--as-of reads snapshots of the database; it cannot use --input")
        return read_study_files(inputs), None
    from irtscope.trials._store import Store

    store = Store(existing_db(db)).open()
    if as_of is None:
        return list(store.iter_studies()), store
    from irtscope.trials._asof import iter_studies_as_of, resolve_snapshot

    try:
        snapshot = resolve_snapshot(store, as_of)
        studies = list(iter_studies_as_of(store, snapshot))
    finally:
        # a view of the past is not recorded as a screening run of the store
        store.close()
    info(f"as of snapshot {snapshot}: {len(studies)} trials")
    return studies, None


def _write(frame: Any, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    else:
        from irtscope.report import write_csv  # registry text: no live spreadsheet formulas

        write_csv(frame, out, index=False)
    info(f"wrote {len(frame)} rows to {out}")


def _run(
    protocol: str,
    db: Path | None,
    inputs: list[Path] | None,
    overrides: Path | None,
    classify: bool,
    as_of: str | None = None,
) -> tuple[Any, Any, Any, Any, Any]:
    from irtscope.trials._classify import classify_studies
    from irtscope.trials._overrides import load_overrides
    from irtscope.trials._protocol import load_protocol
    from irtscope.trials._screen import screen_studies

    proto = load_protocol(protocol)
    table = load_overrides(overrides) if overrides else None
    studies, store = _studies(db, inputs, as_of)
    if table is not None and len(table):
        known = {_nct(s) for s in studies}
        unknown = sorted(set(table["nct_id"]) - known)
        if unknown:
            # most often a typo in the NCT id: say so rather than silently doing nothing
            info(
                f"{len(unknown)} override(s) name trials not in the data, ignored: "
                + ", ".join(unknown)
            )
            table = table[~table["nct_id"].isin(unknown)].reset_index(drop=True)
    with progress_bar("screening", total=len(studies)) as bar:
        screening = screen_studies(studies, proto, overrides=table, progress=bar)
    classification = None
    if classify:
        included = set(screening.loc[screening["decision"] == "included", "nct_id"])
        chosen = [s for s in studies if _nct(s) in included]
        with progress_bar("classifying", total=len(chosen)) as bar:
            classification = classify_studies(chosen, proto, overrides=table, progress=bar)
    return proto, screening, classification, table, store


def _nct(study: dict) -> str:
    return ((study.get("protocolSection") or {}).get("identificationModule") or {}).get("nctId", "")


def _record(
    store: Any, proto: Any, screening: Any, classification: Any, table: Any, overrides: Path | None
) -> None:
    if store is None:
        return
    from irtscope.trials._overrides import record_overrides
    from irtscope.trials._screen import record_screening

    try:
        run_id = record_screening(store.con, screening, proto, classification)
        if table is not None:
            record_overrides(store.con, table, str(overrides))
    finally:
        store.close()
    info(f"recorded screening run {run_id} in the store")


def _summary(screening: Any) -> None:
    counts = screening.groupby(["step", "reason"], dropna=False).size()
    info(f"{len(screening)} trials screened")
    for (step, reason), n in counts.items():
        label = "included" if step == 0 else f"{step:>2}. {reason}"
        info(f"  {label:<32} {n}")
    n_over = int(screening["overridden"].sum())
    if n_over:
        info(f"  ({n_over} decision(s) set by reviewer overrides)")


def screen(
    protocol: ProtocolOpt = "nsclc-irt",
    db: DbOpt = None,
    inputs: InputOpt = None,
    overrides: OverridesOpt = None,
    out: OutOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Screen every trial: included, or the first failing criterion, with evidence."""
    proto, screening, _, table, store = _run(
        protocol, db, inputs, overrides, classify=False, as_of=as_of
    )
    _summary(screening)
    _write(screening, out)
    _record(store, proto, screening, None, table, overrides)


def classify(
    protocol: ProtocolOpt = "nsclc-irt",
    db: DbOpt = None,
    inputs: InputOpt = None,
    overrides: OverridesOpt = None,
    out: OutOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Screen, then classify the included trials (long form: trial, variable, value...)."""
    proto, screening, classification, table, store = _run(
        protocol, db, inputs, overrides, classify=True, as_of=as_of
    )
    _summary(screening)
    info(
        f"{len(classification)} classification rows for "
        f"{classification['nct_id'].nunique()} included trials"
    )
    _write(classification, out)
    _record(store, proto, screening, classification, table, overrides)


def review(
    protocol: ProtocolOpt = "nsclc-irt",
    db: DbOpt = None,
    inputs: InputOpt = None,
    overrides: OverridesOpt = None,
    threshold: Annotated[
        float | None, typer.Option(help="List calls below this confidence (default: protocol).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many calls.")] = 50,
    out: OutOpt = None,
) -> None:
    """List the calls with the weakest evidence first, so a person checks those first."""
    import pandas as pd

    proto, screening, classification, table, store = _run(
        protocol, db, inputs, overrides, classify=True
    )
    if store is not None:
        store.close()
    cut = proto.weak_confidence if threshold is None else threshold
    weak_screen = screening[(screening["confidence"] < cut) & ~screening["overridden"]].copy()
    weak_screen["variable"] = "decision"
    weak_screen["value"] = weak_screen["decision"] + weak_screen["reason"].map(
        lambda r: f" ({r})" if r else ""
    )
    weak_screen["evidence"] = [
        _rule_evidence(ev, rule)
        for ev, rule in zip(weak_screen["evidence"], weak_screen["weakest_rule"], strict=True)
    ]
    weak_class = classification[
        (classification["confidence"] < cut) & ~classification["overridden"]
    ]
    cols = ["nct_id", "variable", "value", "confidence", "evidence"]
    weak = pd.concat([weak_screen[cols], weak_class[cols]], ignore_index=True)
    weak = weak.sort_values(["confidence", "nct_id"], kind="stable")
    info(f"{len(weak)} call(s) with confidence < {cut} (weakest first)")
    for row in weak.head(limit).itertuples():
        _say(
            f"  {row.nct_id}  {row.variable:<22} {row.value!s:<34} {row.confidence:.2f}  "
            f"{str(row.evidence)[:90]}"
        )
    if table is not None and len(table):
        info(f"{len(table)} reviewer override(s) applied:")
        for row in table.itertuples():
            _say(
                f"  {row.nct_id}  {row.variable} = {row.value}  ({row.reviewer}, {row.date}: "
                f"{row.reason})"
            )
    _write(weak, out)


def _say(line: str) -> None:
    """Print registry or reviewer text as is: no Rich markup ("[...]"), one line per call."""
    from irtscope._console import is_quiet, out_console

    if not is_quiet():
        out_console.print(line, markup=False, highlight=False, soft_wrap=True)


def _rule_evidence(evidence: str, rule: str) -> str:
    """The evidence of the rule that made the call weak."""
    items = [i for i in json.loads(evidence or "[]") if i["rule"] == rule]
    return "; ".join(f"[{rule}] {i['field']}: {i['text']}" for i in items[:2])


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("screen")(screen)
    app.command("classify")(classify)
    app.command("review")(review)
