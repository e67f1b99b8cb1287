"""Harvester against a local fake API v2 (127.0.0.1 only; no internet) and MockTransport."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from ctgov_server import FakeCtgov
from typer.testing import CliRunner

from irtscope._errors import FetchError
from irtscope.cli import app
from irtscope.trials import CtgovClient, QuerySpec, Store, harvest

QUERIES = [
    QuerySpec(name="nsclc", cond="lung"),
    QuerySpec(name="radiotherapy", term="radiotherapy"),
    QuerySpec(name="pembrolizumab", intr="pembrolizumab"),
    QuerySpec(
        name="recent-recruiting",
        cond="lung",
        advanced="AREA[StartDate]RANGE[2020-01-01,MAX]",
        overall_status=("RECRUITING", "NOT_YET_RECRUITING"),
    ),
]


def _load(path: Path) -> list[dict]:
    with gzip.open(path) as handle:
        return orjson.loads(handle.read())


@pytest.fixture(scope="module")
def records(ctgov_dir: Path) -> list[dict]:
    return _load(ctgov_dir / "nsclc_150.json.gz")


def _client(server: FakeCtgov, sleeps: list[float] | None = None, **kwargs) -> CtgovClient:
    options = {"rate_limit": None, "timeout": 2.0, "backoff": 0.001, "max_retries": 4}
    options.update(kwargs)
    return CtgovClient(
        base_url=server.base_url,
        sleep=(sleeps.append if sleeps is not None else lambda s: None),
        seed=0,
        **options,
    )


def _provenance(store: Store) -> set[tuple[str, str]]:
    return set(
        store.con.execute(
            "SELECT DISTINCT nct_id, query_name FROM entries WHERE query_key IS NOT NULL"
        ).fetchall()
    )


def _expected(server: FakeCtgov) -> set[tuple[str, str]]:
    return {(nct, q.name) for q in QUERIES for nct in server.expected(q.params())}


def test_harvested_and_imported_copies_of_a_record_are_one_version(
    records: list[dict], ctgov_dir: Path
) -> None:
    """Pages keep each study's bytes; a file of the same records adds no new version."""
    from irtscope.trials import import_paths

    with FakeCtgov(records) as server, Store(":memory:") as store:
        with _client(server) as client:
            result = harvest(store, QUERIES[:1], client=client, page_size=40)
        report = import_paths(store, [ctgov_dir / "nsclc_150.json.gz"])
        assert report.new_versions == report.older_versions == 0
        assert report.identical == result.unique > 0
        assert report.new_studies == len(records) - result.unique


def test_harvest_gets_every_match_exactly_once(records: list[dict]) -> None:
    with FakeCtgov(records) as server, Store(":memory:") as store:
        with _client(server) as client:
            result = harvest(store, QUERIES, client=client, page_size=25)
        expected = _expected(server)
        assert _provenance(store) == expected
        hits = sum(len(server.expected(q.params())) for q in QUERIES)
        unique = len({nct for nct, _ in expected})
        assert (result.hits, result.unique) == (hits, unique)
        assert store.study_count() == unique
        summary = store.hit_summary()
        assert summary["entries_read"] == hits
        assert {name: v["hits"] for name, v in summary["queries"].items()} == {
            q.name: len(server.expected(q.params())) for q in QUERIES
        }
        assert all(q.total_count == q.hits for q in result.queries)
        # no page was served twice, and paging kept the query parameters unchanged
        tokens = [tuple(sorted(e["params"].items())) for e in server.page_requests()]
        assert len(tokens) == len(set(tokens))
        info = store.snapshot_info()
        assert info["data_timestamp"] == server.data_timestamp
        assert info["kind"] == "api" and info["status"] == "complete"
        logged = store.con.execute("SELECT name FROM queries ORDER BY name").fetchall()
        assert logged == sorted((q.name,) for q in QUERIES)
        some = next(iter(expected))[0]
        assert store.queries_for(some) == sorted(n for c, n in expected if c == some)
        # a finished harvest is not fetched again (unless refresh=True)
        served = len(server.page_requests())
        with _client(server) as client:
            again = harvest(store, QUERIES, client=client, page_size=25)
        assert again.resumed and again.pages_fetched == 0
        assert len(server.page_requests()) == served


def test_faults_are_retried_with_backoff(records: list[dict]) -> None:
    with FakeCtgov(records, retry_after="7", stall_seconds=0.6) as server:
        with Store(":memory:") as clean, _client(server) as client:
            harvest(clean, QUERIES, client=client, page_size=30)
            reference = _provenance(clean)
        server.faults.extend(["429", "500", "stall", "cut", "drop", "500", "cut"])
        sleeps: list[float] = []
        with (
            Store(":memory:") as store,
            _client(server, sleeps, timeout=0.2, max_retries=8) as client,
        ):
            harvest(store, QUERIES, client=client, page_size=30)
            assert _provenance(store) == reference
            assert client.retries_made == 7
        assert sleeps[0] == 7.0  # Retry-After honoured (injected sleep: no real waiting)
        assert all(s <= 0.001 * 2**8 for s in sleeps[1:])  # tiny jittered backoff


def test_killed_harvest_resumes_without_refetching(records: list[dict], tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    with FakeCtgov(records) as server:
        with Store(":memory:") as clean, _client(server) as client:
            harvest(clean, QUERIES, client=client, page_size=10)
            reference = _provenance(clean)
            reference_versions = clean.con.execute(
                "SELECT nct_id, version FROM study_versions ORDER BY 1"
            ).fetchall()
        server.log.clear()
        calls = {"n": 0}

        def killer(advance: int, total: int | None, desc: str) -> None:
            if advance:
                calls["n"] += 1
                if calls["n"] == 4:
                    raise KeyboardInterrupt  # the user pressed Ctrl-C after page 4

        with Store(db) as store, _client(server) as client, pytest.raises(KeyboardInterrupt):
            harvest(store, QUERIES, client=client, page_size=10, progress=killer)
        first_run = [e["params"].get("pageToken") for e in server.page_requests()]
        assert len(first_run) == 4
        server.log.clear()
        with Store(db) as store, _client(server) as client:
            result = harvest(store, QUERIES, client=client, page_size=10)
            assert result.resumed
            assert _provenance(store) == reference
            assert store.con.execute(
                "SELECT nct_id, version FROM study_versions ORDER BY 1"
            ).fetchall() == (reference_versions)
            hits = store.hit_summary()["entries_read"]
            assert hits == sum(len(server.expected(q.params())) for q in QUERIES)
        second_run = server.page_requests()
        # the resumed run starts after the 4 stored pages: nothing fetched twice
        assert not any(e["params"].get("pageToken") in first_run[1:] for e in second_run)
        assert len(first_run) + len(second_run) == sum(
            -(-len(server.expected(q.params())) // 10) for q in QUERIES
        )


def test_fetch_error_names_url_and_offline_route(records: list[dict]) -> None:
    with FakeCtgov(records) as server, Store(":memory:") as store:
        server.faults.extend(["500"] * 10)
        with _client(server, max_retries=2) as client, pytest.raises(FetchError) as err:
            harvest(store, QUERIES[:1], client=client)
        message = str(err.value)
        assert server.base_url in message and "trials import" in message
        assert isinstance(err.value, ConnectionError)


def test_unreachable_registry_raises_fetch_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(refuse)) as http:
        client = CtgovClient(
            http,
            base_url="http://registry.invalid/api/v2",
            rate_limit=None,
            max_retries=1,
            sleep=lambda s: None,
        )
        with Store(":memory:") as store, pytest.raises(FetchError, match=r"registry\.invalid"):
            harvest(store, QUERIES[:1], client=client)


def test_rate_limit_spaces_requests() -> None:
    now = {"t": 0.0}
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now["t"] += seconds

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"apiVersion": "2", "dataTimestamp": "x"})

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        client = CtgovClient(http, rate_limit=2.0, sleep=sleep, clock=lambda: now["t"])
        for _ in range(3):
            client.version()
    assert sleeps == [0.5, 0.5]


def test_cli_fetch_against_local_server(records: list[dict], tmp_path: Path) -> None:
    query_file = tmp_path / "q.yaml"
    query_file.write_text(
        "queries:\n  - name: nsclc\n    cond: lung\n  - name: rt\n    term: radiotherapy\n",
        encoding="utf-8",
    )
    db = tmp_path / "cli.duckdb"
    with FakeCtgov(records) as server:
        result = CliRunner().invoke(
            app,
            [
                "trials",
                "fetch",
                "--db",
                str(db),
                "--query-file",
                str(query_file),
                "--intr",
                "pembrolizumab",
                "--name",
                "pembro",
                "--base-url",
                server.base_url,
                "--rate-limit",
                "0",
                "--page-size",
                "50",
            ],
        )
        assert result.exit_code == 0, result.output
        n = len({nct for q in QUERIES[:3] for nct in server.expected(q.params())})
    assert f"-> {n} unique studies" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  condition: lung\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["trials", "fetch", "--db", str(db), "--query-file", str(bad)])
    assert result.exit_code != 0


@pytest.mark.network
@pytest.mark.skipif(
    os.environ.get("IRTSCOPE_LIVE_TESTS") != "1",
    reason="live registry test: set IRTSCOPE_LIVE_TESTS=1 and run with -m network",
)
def test_live_registry_count_and_first_page() -> None:  # pragma: no cover - needs internet
    query = QuerySpec(name="live", cond="NSCLC", term="radiotherapy AND pembrolizumab")
    with CtgovClient(timeout=30.0) as client:
        total = client.count(query)
        page = client.page(query, page_size=5)
        assert total is not None and total >= len(page["studies"]) > 0
        assert client.version().get("dataTimestamp")


def _fetch_args(db: Path, server: FakeCtgov, *extra: str) -> list[str]:
    return [
        "trials", "fetch", "--db", str(db), *extra,
        "--base-url", server.base_url, "--rate-limit", "0", "--page-size", "50",
    ]  # fmt: skip


def test_cli_fetch_protocol_harvests_its_queries(records: list[dict], tmp_path: Path) -> None:
    from irtscope.trials import load_protocol

    preset = load_protocol("nsclc-irt")
    data = yaml.safe_load((Path(str(preset.base_dir)) / "nsclc-irt.yaml").read_text("utf-8"))
    data["queries"] = [q.model_dump(exclude_defaults=True) for q in QUERIES[:2]]
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(data), encoding="utf-8")
    db = tmp_path / "p.duckdb"
    with FakeCtgov(records) as server:
        result = CliRunner().invoke(
            app, _fetch_args(db, server, "--protocol", str(custom), "--intr", "pembrolizumab",
                             "--name", "pembrolizumab"),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        expected = {(nct, q.name) for q in QUERIES[:3] for nct in server.expected(q.params())}
        # the preset by name sends exactly its own queries (their names are the provenance)
        preset_db = tmp_path / "preset.duckdb"
        result = CliRunner().invoke(app, _fetch_args(preset_db, server, "--protocol", "nsclc-irt"))
        assert result.exit_code == 0, result.output
        sent = [e["params"].items() for e in server.log if e["path"].endswith("/studies")]
    with Store(db) as store:
        assert _provenance(store) == expected
    with Store(preset_db) as store:
        names = {
            name for (name,) in store.con.execute("SELECT name FROM harvest_queries").fetchall()
        }
    assert names == {q.name for q in preset.queries}
    for q in preset.queries:
        assert any(q.params().items() <= s for s in sent), q.name
    for args in (["--protocol", "no-such-protocol"], []):
        result = CliRunner().invoke(app, ["trials", "fetch", "--db", str(db), *args])
        assert result.exit_code != 0
        assert "protocol" in str(result.exception) or "protocol" in result.output


@pytest.mark.parametrize("cycle", [1, 2])
def test_repeated_page_token_stops_keeps_pages_and_resumes(
    records: list[dict], tmp_path: Path, cycle: int
) -> None:
    """Issue 13, defect 3: a registry whose next page token repeats (A, A, ... or A, B, A,
    ...) was followed until it stopped; now the harvest stops with one line naming the
    query, keeps the pages stored, and resumes once the registry pages properly again."""
    query = QUERIES[0]
    db = tmp_path / "loop.duckdb"
    with FakeCtgov(records, token_cycle=cycle) as server:
        with Store(db) as store, _client(server) as client:
            with pytest.raises(FetchError) as err:
                harvest(store, [query], client=client, page_size=20)
            message = str(err.value)
            assert "\n" not in message and "'nsclc'" in message and "again" in message
            assert len(server.page_requests()) == cycle + 1
            harvest_id = store.con.execute("SELECT max(harvest_id) FROM harvests").fetchone()[0]
            state = store.harvest_query_state(harvest_id, query.key())
            assert state["status"] != "done" and state["pages_done"] == cycle
            assert store.hit_summary()["entries_read"] == 20 * cycle
        with Store(db) as store, _client(server) as client:  # still looping: stops at once
            with pytest.raises(FetchError):
                harvest(store, [query], client=client, page_size=20)
            assert store.hit_summary()["entries_read"] == 20 * cycle
        server.token_cycle = 0  # the registry pages properly again
        with Store(db) as store, _client(server) as client:
            result = harvest(store, [query], client=client, page_size=20)
            assert result.resumed
            expected = server.expected(query.params())
            assert (result.hits, result.unique) == (len(expected), len(expected))
            assert {nct for nct, _ in _provenance(store)} == set(expected)


def test_more_hits_than_counted_stops_the_harvest(records: list[dict]) -> None:
    """Fresh tokens that serve the same page forever: the hits outgrow ``countTotal``."""
    query = QUERIES[0]
    with FakeCtgov(records, endless=True) as server, Store(":memory:") as store:
        with _client(server) as client, pytest.raises(FetchError, match=r"over the .* counted"):
            harvest(store, [query], client=client, page_size=20)
        total = len(server.expected(query.params()))
        assert len(server.page_requests()) <= total // 20 + 3


def test_rejected_page_items_are_counted(records: list[dict], tmp_path: Path) -> None:
    """5 unusable items and 1 study on a page: the counts say that 5 were rejected."""
    nct = records[0]["protocolSection"]["identificationModule"]["nctId"]
    junk = [1, "text", [], {"protocolSection": {}}, {"hasResults": False}]
    with FakeCtgov(records, junk=junk) as server:
        with Store(":memory:") as store, _client(server) as client:
            result = harvest(store, [QuerySpec(name="one", term=nct)], client=client)
        assert (result.hits, result.unique, result.rejected) == (1, 1, 5)
        assert result.queries[0].hits == 6 and result.queries[0].rejected == 5
        assert "5 rejected" in result.summary()
        cli = CliRunner().invoke(
            app,
            ["trials", "fetch", "--db", str(tmp_path / "j.duckdb"), "--term", nct,
             "--base-url", server.base_url, "--rate-limit", "0"],
        )  # fmt: skip
    assert "6 hits of 6 counted (5 rejected)" in cli.output, cli.output
    assert "1 hits -> 1 unique studies (5 rejected" in cli.output


@pytest.mark.parametrize("fault", ["trickle", "trickle_headers"])
def test_timeout_bounds_the_whole_request(records: list[dict], fault: str) -> None:
    """Issue 13, defect 8: a server that sends a byte every 0.1 s never trips a per-read
    timeout; the timeout now bounds the whole request (connect, headers, body)."""
    import threading
    import time

    timeout, margin = 0.6, 0.6
    with FakeCtgov(records, trickle_seconds=0.1) as server:
        server.faults.append(fault)
        client = CtgovClient(base_url=server.base_url, rate_limit=None, timeout=timeout,
                             max_retries=0)  # fmt: skip
        outcome: dict[str, object] = {}

        def attempt() -> None:
            started = time.monotonic()
            try:
                client.page(QUERIES[0], None, 5)
            except FetchError as exc:
                outcome["error"] = str(exc)
            outcome["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=attempt, daemon=True)
        worker.start()
        worker.join(timeout + margin + 2)  # a per-read timeout would take minutes here
        client.close()
    assert not worker.is_alive(), "the request outlived its timeout"
    assert "timeout" in str(outcome.get("error")), outcome
    assert outcome["seconds"] < timeout + margin


def test_page_with_a_deeply_nested_study_keeps_the_others(records: list[dict]) -> None:
    """A study nested 3,000 levels made msgspec raise RecursionError for the whole page."""
    from irtscope.trials._api import _decode_page

    deep = b'{"protocolSection": {"identificationModule": {"nctId": "NCT09999999"}}, "x": '
    deep += b"[" * 3000 + b"]" * 3000 + b"}"
    good = orjson.dumps(records[0])
    content = b'{"studies": [' + deep + b", " + good + b'], "nextPageToken": "t", "totalCount": 2}'
    page = _decode_page(content)
    assert page["nextPageToken"] == "t" and page["totalCount"] == 2
    assert [bytes(s) for s in page["studies"]] == [deep, good]
    with Store(":memory:") as store:
        harvest_id, snapshot_id, _ = store.open_harvest("x", [("k", "q", {})], None)
        counts = store.store_page(harvest_id, snapshot_id, "k", "q", 0, page["studies"], None, "x")
        assert counts["new_studies"] == 1
        assert [(f.position, "nested too deeply" in f.reason) for f in counts["failures"]] == [
            ("page 0 item 0", True)
        ]
