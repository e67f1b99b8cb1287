"""CLI: ``irtscope trials report`` and ``irtscope trials demo`` (registered by the root CLI).

Bodies stay thin: open or fill a store, call :func:`build_landscape_report`, print where the
report went. Heavy imports happen inside the commands so ``irtscope --help`` stays fast.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from irtscope._console import err_console, info, progress_bar

DEFAULT_OUT = Path("build/report/trials")
OFFLINE_HINT = "run offline with: make demo SOURCE=path/to/records.json.gz"


class _Phases:
    """A progress callback that opens one Rich bar per phase ("Screening", "Classifying"...).

    Library code reports phases through the description argument; each new description
    closes the previous bar and starts a fresh one, so every phase shows its own n/total.
    """

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._bar: Any = None
        self._phase = ""

    def __call__(self, advance: int, total: int | None = None, desc: str = "") -> None:
        if desc and desc != self._phase:
            self._stack.close()
            self._stack = ExitStack()
            self._bar = self._stack.enter_context(progress_bar(desc, total))
            self._phase = desc
            total = None
        if self._bar is not None:
            self._bar(advance, total, "")

    def close(self) -> None:
        self._stack.close()


def _import_sources(store: Any, sources: list[Path]) -> None:
    from irtscope._errors import DataError
    from irtscope.trials._sources_files import import_paths

    with progress_bar("Importing records") as bar:
        report = import_paths(store, sources, progress=bar)
    from rich.markup import escape

    for failure in report.failures:
        # positions read "[line 7]": escaped, or Rich would take them for markup
        err_console.print(
            f"[yellow]import:[/] {escape(str(failure))}", highlight=False, soft_wrap=True
        )
    if report.entries_read == 0:
        raise DataError(f"no registry records could be read from {', '.join(map(str, sources))}")
    info(f"Imported {report.entries_read} records ({report.new_studies} unique studies).")


def _fresh_store(out: Path) -> Any:
    from irtscope.trials._store import Store

    out.mkdir(parents=True, exist_ok=True)
    path = out / "records.duckdb"
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)
    return Store(path)


def _report(
    store: Any,
    protocol: str,
    out: Path,
    overrides: Path | None,
    as_of: str | None = None,
    since: str | None = None,
    banner: str | None = None,
) -> Any:
    from irtscope.trials._report import build_landscape_report

    phases = _Phases()
    try:
        result = build_landscape_report(
            store,
            protocol,
            out,
            overrides=overrides,
            progress=phases,
            as_of=as_of,
            since=since,
            banner=banner,
        )
    finally:
        phases.close()
    flow = result.flow.set_index("key")["n"]
    info(
        f"{flow['hits']} records -> {flow['unique']} unique interventional -> "
        f"{flow['in_window']} in window -> "
        f"[bold]{result.n_included} included[/] (data timestamp "
        f"{result.snapshot.get('data_timestamp') or 'unknown'})"
    )
    if result.changes is not None:
        info(
            f"Changes since {result.changes.label}: {len(result.changes.frame)} "
            f"(tables/changes.csv)"
        )
    info(f"Report: {result.html}")
    info(f"Tables: {result.out_dir / 'tables'}  Figures: {result.out_dir / 'figures'}")
    return result


def report(
    protocol: Annotated[str, typer.Option(help="Protocol name or YAML path.")] = "nsclc-irt",
    db: Annotated[
        Path | None,
        typer.Option(help="Trials database (DuckDB). Default: $IRTSCOPE_DB or the user data dir."),
    ] = None,
    source: Annotated[
        list[Path] | None,
        typer.Option(
            help="Registry files (JSON/JSONL/ZIP/CSV, .gz ok) to import into a fresh store in "
            "the output folder instead of using --db. Repeatable."
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = DEFAULT_OUT,
    overrides: Annotated[
        Path | None, typer.Option(help="Reviewer overrides file passed to screening.")
    ] = None,
    explain: Annotated[
        list[str] | None,
        typer.Option(
            help="Print the NCT ids behind a table row: VARIABLE or VARIABLE=VALUE "
            "(e.g. stage=IV). Repeatable. All cells are also in tables/explain.csv."
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Report the landscape as it was at this snapshot (id or YYYY-MM-DD; see "
            "'irtscope trials snapshots').",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Add 'Changes since' this snapshot (id or YYYY-MM-DD). Default: the snapshot "
            "before the reported one, when the store has one."
        ),
    ] = None,
) -> None:
    """Screen, classify and describe the trials; write the HTML report, tables and figures."""
    from irtscope.trials._report import explain_rows, iter_explain_lines
    from irtscope.trials._store import Store

    with ExitStack() as stack:
        if source:
            store = stack.enter_context(_fresh_store(out))
            _import_sources(store, list(source))
        else:
            from irtscope.trials._cli_screen import existing_db

            store = stack.enter_context(Store(existing_db(db)))
        result = _report(store, protocol, out, overrides, as_of=as_of, since=since)
    for spec in explain or []:
        for line in iter_explain_lines(explain_rows(result.explain, spec)):
            typer.echo(line)


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("build/demo/trials"),
    source: Annotated[
        list[Path] | None,
        typer.Option(help="Build the report from these registry files instead of the live API."),
    ] = None,
    protocol: Annotated[str, typer.Option(help="Protocol name or YAML path.")] = "nsclc-irt",
    api_url: Annotated[str | None, typer.Option(hidden=True, help="API root (tests).")] = None,
) -> None:
    """Harvest the live registry with the protocol's queries and build the landscape report.

    Offline: ``--source records.json.gz`` (``make demo SOURCE=...``) builds the same report from
    the given records. Never from invented data.
    """
    from irtscope._errors import FetchError
    from irtscope.trials._api import DEFAULT_BASE_URL, CtgovClient, harvest
    from irtscope.trials._protocol import load_protocol

    proto = load_protocol(protocol)
    with _fresh_store(out) if source else _harvest_store(out) as store:
        if source:
            _import_sources(store, list(source))
        else:
            base_url = api_url or DEFAULT_BASE_URL
            try:
                # One quick probe first, so an offline machine hears it at once, in one line.
                with CtgovClient(base_url=base_url, max_retries=1, timeout=10) as probe:
                    probe.version()
                with (
                    CtgovClient(base_url=base_url) as client,
                    progress_bar("Harvesting ClinicalTrials.gov") as bar,
                ):
                    result = harvest(store, proto.queries, client=client, progress=bar)
            except FetchError as exc:
                reason = str(exc).split(". ")[0].rstrip(".")  # the cause, not the advice
                if _report_from_archive(out, protocol, reason):
                    return
                err_console.print(
                    f"ClinicalTrials.gov is not reachable ({reason}); {OFFLINE_HINT}",
                    highlight=False,
                    soft_wrap=True,
                )
                raise typer.Exit(code=1) from None
            info(result.summary())
        _report(store, protocol, out, None)


def _report_from_archive(out: Path, protocol: str, reason: str) -> bool:
    """Offline demo: the landscape from archived real records, when there are any.

    Returns False when no archive is found (``$IRTSCOPE_ARCHIVE``, ``../shared/data/ctgov``);
    the report carries a banner saying the records are archived, with their data dates.
    """
    from irtscope.trials._archive import archive_banner, archive_sources, find_archive

    archive = find_archive()
    if archive is None:
        return False
    info(
        f"ClinicalTrials.gov is not reachable ({reason}); building the landscape from the "
        f"archived registry records in {archive} (not a live search)"
    )
    with _fresh_store(out) as store:
        _import_sources(store, archive_sources(archive))
        _report(store, protocol, out, None, banner=archive_banner(store, archive))
    return True


def _harvest_store(out: Path) -> Any:
    from irtscope.trials._store import Store

    out.mkdir(parents=True, exist_ok=True)
    return Store(out / "harvest.duckdb")


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``demo`` to the ``trials`` sub-app."""
    app.command("report")(report)
    app.command("demo")(demo)
