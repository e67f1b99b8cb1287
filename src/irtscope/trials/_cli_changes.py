"""CLI: ``irtscope trials snapshots`` and ``irtscope trials changes`` (a living landscape).

``snapshots`` shows what each import or harvest brought (so a user can pick ``--since`` /
``--as-of``); ``changes`` lists what changed in the landscape between two of them. Both only
read the store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from irtscope._console import info
from irtscope.trials._cli_screen import DbOpt, OverridesOpt, ProtocolOpt, _say, existing_db

SnapshotRef = Annotated[
    str | None,
    typer.Option(
        help="Snapshot id or date YYYY-MM-DD (the latest snapshot dated on or before it); "
        "see 'irtscope trials snapshots'."
    ),
]


def snapshots(db: DbOpt = None) -> None:
    """List the store's snapshots: source, retrieval time, registry data timestamp, counts."""
    from irtscope.trials._asof import list_snapshots
    from irtscope.trials._store import Store

    with Store(existing_db(db), read_only=True) as store:
        table = list_snapshots(store)
    if table.empty:
        info("no snapshots: import or fetch records first")
        return
    _say(
        f"{'id':>4}  {'kind':<5} {'retrieved at (UTC)':<19}  {'data timestamp':<20} "
        f"{'entries':>7} {'studies':>7} {'new':>5} {'versions':>8}  source"
    )
    for row in table.itertuples(index=False):
        _say(
            f"{row.snapshot_id:>4}  {row.kind or '':<5} {(row.retrieved_at or '')[:19]:<19}  "
            f"{row.data_timestamp or '':<20} {row.entries:>7} {row.studies:>7} "
            f"{row.new_studies:>5} {row.new_versions:>8}  {row.source}"
            + ("" if row.status == "complete" else f"  [{row.status}]")
        )


def changes(
    protocol: ProtocolOpt = "nsclc-irt",
    db: DbOpt = None,
    since: SnapshotRef = None,
    until: SnapshotRef = None,
    overrides: OverridesOpt = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the changes table (.csv, .parquet or .xlsx)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Print at most this many changes.")] = 500,
) -> None:
    """What changed in the landscape between two snapshots (default: the two latest)."""
    from irtscope.trials._changes import CHANGE_KINDS, compare_snapshots
    from irtscope.trials._overrides import load_overrides
    from irtscope.trials._store import Store

    table = load_overrides(overrides) if overrides else None
    with Store(existing_db(db), read_only=True) as store:
        result = compare_snapshots(store, protocol, since=since, until=until, overrides=table)
    frame = result.frame
    info(f"Changes from {_describe(result.since)} to {_describe(result.until)}:")
    counts = result.counts()
    for row in counts[counts["changes"] > 0].itertuples(index=False):
        info(
            f"  {row.label:<30} {row.changes:>5} change(s) in {row.trials} trial(s)"
            f" ({row.in_landscape} in the landscape)"
        )
    if frame.empty:
        info("  nothing changed")
    for row in frame.head(limit).itertuples(index=False):
        flag = "*" if row.included_before or row.included_after else " "
        _say(f"{flag} {row.nct_id}  {CHANGE_KINDS[row.kind]:<28} {row.detail}")
    if len(frame) > limit:
        info(f"  ... {len(frame) - limit} more (--limit, or --out to write them all)")
    if not frame.empty:
        info("  (* = in the landscape at either snapshot)")
    _write(frame, out)


def _describe(row: dict[str, Any]) -> str:
    stamp = row.get("data_timestamp") or row.get("retrieved_at") or "undated"
    return f"snapshot {row.get('snapshot_id')} ({stamp}, {Path(str(row.get('source'))).name})"


def _write(frame: Any, out: Path | None) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    from irtscope.report._safe import safe_frame

    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".xlsx":
        safe_frame(frame).to_excel(out, index=False, sheet_name="changes")
    else:
        safe_frame(frame).to_csv(out, index=False)
    info(f"wrote {len(frame)} rows to {out}")


def register(app: typer.Typer) -> None:
    """Add ``snapshots`` and ``changes`` to the ``trials`` sub-app."""
    app.command("snapshots")(snapshots)
    app.command("changes")(changes)
