"""CLI: ``irtscope trials fetch``, ``irtscope trials import``, ``irtscope trials stats``.

Thin wrappers: parse options, call :func:`harvest` / :func:`import_paths`, print counts.
Heavy imports (duckdb, httpx, pyarrow) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from irtscope.trials._sources_files import DEFAULT_BATCH_SIZE

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="Trials database file (DuckDB). Default: $IRTSCOPE_DB or the user data dir.",
    ),
]


def _print_counts(title: str, counts: dict[str, int]) -> None:
    from irtscope._console import info

    info(f"{title}: " + ", ".join(f"{name} {n:,}" for name, n in counts.items()))


def load_query_file(path: Path) -> list[Any]:
    """Queries from YAML: a list of QuerySpec mappings, or ``{"queries": [...]}``.

    Raises
    ------
    ConfigError
        Unreadable YAML, unknown keys or bad values (named, with the file).
    """
    import pydantic
    import yaml

    from irtscope._errors import ConfigError
    from irtscope.trials._query import QuerySpec

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read query file: {exc}") from exc
    if isinstance(data, dict) and "queries" in data:
        data = data["queries"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{path}: expected a list of queries (name, cond, term, ...)")
    out = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and isinstance(item.get("overall_status"), str):
            item = {**item, "overall_status": (item["overall_status"],)}
        try:
            out.append(QuerySpec.model_validate(item))
        except pydantic.ValidationError as exc:
            raise ConfigError(f"{path}: query {i + 1} is invalid: {exc}") from exc
    return out


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""

    @app.command("import")
    def import_command(
        paths: Annotated[
            list[Path],
            typer.Argument(
                help="API v2 JSON (list, pages, JSONL; .gz ok), bulk-download zip or "
                "registry CSV files."
            ),
        ],
        db: DbOption = None,
        batch_size: Annotated[
            int, typer.Option(help="Records per insert batch.")
        ] = DEFAULT_BATCH_SIZE,
    ) -> None:
        """Import registry files into the trials database (idempotent)."""
        from irtscope._console import err_console, info, progress_bar
        from irtscope.trials._sources_files import import_paths
        from irtscope.trials._store import Store

        with Store(db) as store, progress_bar("importing") as progress:
            report = import_paths(store, paths, progress=progress, batch_size=batch_size)
            summary = store.hit_summary()
        info(
            f"read {report.entries_read:,} entries from {report.files} file(s): "
            f"{report.new_studies:,} new studies, {report.new_versions:,} newer versions, "
            f"{report.duplicates:,} duplicates ({report.identical:,} identical, "
            f"{report.older_versions:,} older versions kept as history, "
            f"{report.new_versions:,} newer versions now current, "
            f"{report.alias_merged:,} merged by nctIdAliases)"
        )
        if report.already_imported:
            info(f"{report.already_imported} file(s) had been imported before: nothing added")
        info(
            f"database: {summary['entries_read']:,} entries -> "
            f"{summary['unique_studies']:,} unique studies"
        )
        _print_counts("rows per table", report.table_counts)
        if report.conflicts:
            err_console.print(
                f"[bold yellow]{len(report.conflicts)} conflict(s) (imported; the current "
                "version chosen by version id):[/]"
            )
            for conflict in report.conflicts[:50]:
                err_console.print(f"  {conflict}", highlight=False, markup=False, soft_wrap=True)
        if report.failures:
            err_console.print(f"[bold red]{len(report.failures)} failure(s):[/]")
            for failure in report.failures[:50]:
                # registry text and positions ("[line 7]") are not Rich markup; one line each
                err_console.print(f"  {failure}", highlight=False, markup=False, soft_wrap=True)
            if len(report.failures) > 50:
                err_console.print(f"  ... and {len(report.failures) - 50} more")
            raise typer.Exit(code=1)

    @app.command("fetch")
    def fetch_command(
        cond: Annotated[str | None, typer.Option(help="query.cond (condition).")] = None,
        term: Annotated[str | None, typer.Option(help="query.term (other terms).")] = None,
        intr: Annotated[str | None, typer.Option(help="query.intr (intervention).")] = None,
        advanced: Annotated[
            str | None,
            typer.Option(help="filter.advanced, e.g. 'AREA[StartDate]RANGE[2014-01-01,MAX]'."),
        ] = None,
        status: Annotated[
            list[str] | None,
            typer.Option("--status", help="filter.overallStatus value (repeatable)."),
        ] = None,
        name: Annotated[str, typer.Option(help="Label of the query given by options.")] = "cli",
        query_file: Annotated[
            list[Path] | None,
            typer.Option("--query-file", help="YAML list of queries (repeatable)."),
        ] = None,
        protocol: Annotated[
            str | None,
            typer.Option(
                "--protocol",
                help="Harvest the queries of this protocol (preset name, e.g. nsclc-irt, or a "
                "protocol YAML file).",
            ),
        ] = None,
        page_size: Annotated[int, typer.Option(min=1, max=1000)] = 1000,
        base_url: Annotated[
            str, typer.Option(help="API root (e.g. a mirror or a local test server).")
        ] = "https://clinicaltrials.gov/api/v2",
        rate_limit: Annotated[
            float, typer.Option(help="Max requests per second (0: unlimited).")
        ] = 0.8,
        timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 30.0,
        max_retries: Annotated[int, typer.Option(min=0)] = 5,
        max_studies: Annotated[
            int | None, typer.Option(help="Refuse a query that matches more studies.")
        ] = None,
        refresh: Annotated[
            bool, typer.Option(help="Harvest again even if these queries finished before.")
        ] = False,
        db: DbOption = None,
    ) -> None:
        """Harvest studies from ClinicalTrials.gov API v2 (resumable; several queries)."""
        from irtscope._console import err_console, info, progress_bar
        from irtscope._errors import ConfigError
        from irtscope.trials._api import CtgovClient, harvest
        from irtscope.trials._query import QuerySpec
        from irtscope.trials._store import Store

        queries = []
        if protocol is not None:
            from irtscope.trials._protocol import load_protocol

            spec = load_protocol(protocol)
            if not spec.queries:
                raise ConfigError(f"protocol {spec.name!r} ({protocol}) lists no 'queries'")
            queries.extend(spec.queries)
        for path in query_file or []:
            queries.extend(load_query_file(path))
        if any((cond, term, intr, advanced, status)):
            queries.append(
                QuerySpec(
                    name=name,
                    cond=cond,
                    term=term,
                    intr=intr,
                    advanced=advanced,
                    overall_status=tuple(status or ()),
                )
            )
        if not queries:
            raise ConfigError(
                "give a query: --cond/--term/--intr/..., --query-file FILE or --protocol NAME"
            )
        client = CtgovClient(
            base_url=base_url,
            rate_limit=rate_limit or None,
            timeout=timeout,
            max_retries=max_retries,
        )
        with client, Store(db) as store, progress_bar("fetching") as progress:
            result = harvest(
                store,
                queries,
                client=client,
                progress=progress,
                page_size=page_size,
                refresh=refresh,
                max_studies=max_studies,
            )
            counts = store.table_counts()
        info(
            f"data timestamp {result.data_timestamp or 'unknown'}"
            + (" (resumed harvest)" if result.resumed else "")
        )
        for q in result.queries:
            rejected = f" ({q.rejected:,} rejected)" if q.rejected else ""
            info(
                f"  {escape(q.name)}: {q.hits:,} hits of {q.total_count} counted{rejected}, "
                f"{q.pages} page(s)"
            )
        info(
            f"{result.summary()}; {result.new_studies:,} new studies, "
            f"{result.new_versions:,} newer versions this run"
        )
        _print_counts("rows per table", counts)
        if result.failures:
            for failure in result.failures[:50]:
                err_console.print(
                    f"  skipped: {failure}", highlight=False, markup=False, soft_wrap=True
                )
            raise typer.Exit(code=1)

    @app.command("stats")
    def stats_command(db: DbOption = None) -> None:
        """Counts per table, hits -> unique studies, and the latest snapshot."""
        from irtscope._console import info
        from irtscope.trials._cli_screen import existing_db
        from irtscope.trials._store import Store

        with Store(existing_db(db)) as store:
            summary = store.hit_summary()
            counts = store.table_counts()
            snapshot = store.snapshot_info()
        info(
            f"{summary['entries_read']:,} entries (hits) -> "
            f"{summary['unique_studies']:,} unique studies"
        )
        for label, key in (("query", "queries"), ("source", "sources")):
            for item, value in summary[key].items():
                info(
                    f"  {label} {escape(str(item))}: {value['hits']:,} hits, "
                    f"{value['unique']:,} studies"
                )
        _print_counts("rows per table", counts)
        info(
            f"latest snapshot: {snapshot.get('source')} retrieved {snapshot.get('retrieved_at')}"
            f", data timestamp {snapshot.get('data_timestamp') or 'n/a'}"
        )
