"""ClinicalTrials.gov API v2 client and the resumable, multi-query harvester.

The client retries what is worth retrying (429, 5xx, timeouts, connection resets, bodies cut
short) with exponential backoff and full jitter, honours ``Retry-After``, and spaces requests
by a polite rate limit. httpx's own ``retries=`` only covers failed connections, so the loop is
ours. Pass an ``httpx.Client`` (e.g. with a ``MockTransport``) to test without a network.

The harvester follows the ctrdata habit: count first (``countTotal``), then page with
``pageToken`` and unchanged parameters, store every page in the same transaction as the new
page token, and log every query in the store. A killed harvest resumes at the page after the
last stored one.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpcore
import httpx
import msgspec
import orjson

from irtscope._errors import ConfigError, FetchError
from irtscope.trials._json_scan import page_from_nested
from irtscope.trials._query import QuerySpec

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://clinicaltrials.gov/api/v2"
#: The registry asks for about 50 requests per minute; stay under it by default.
DEFAULT_RATE_LIMIT = 0.8
MAX_PAGE_SIZE = 1000
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})

ProgressCallback = Callable[[int, "int | None", str], None]


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Deadline(threading.local):
    """When the request in progress on this thread must be over (``time.monotonic``)."""

    at: float | None = None

    @contextlib.contextmanager
    def until(self, at: float) -> Iterator[None]:
        previous, self.at = self.at, at
        try:
            yield
        finally:
            self.at = previous

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        """``timeout`` of one socket operation, cut to what is left of the request."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise error("the request took longer than its timeout")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the request's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, timeout), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend with a deadline for the whole request.

    httpx's timeouts apply to each socket operation: a server that sends one byte a second
    never trips a read timeout of two seconds, and held every attempt as long as it liked.
    Cutting every connect, read and write to what is left of the request bounds the whole
    request (connect, headers and body) by ``timeout``, headers included, which a check
    between body chunks alone cannot do.
    """

    def __init__(self, inner: httpcore.NetworkBackend, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _install_deadline(client: httpx.Client, deadline: _Deadline) -> bool:
    """Put :class:`_DeadlineBackend` under the connection pools of a client we built.

    httpx has no public hook for httpcore's network backend, so this reaches into its
    transports; where their layout is not the expected one it changes nothing, and the
    deadline is then checked between body chunks only (see ``CtgovClient._attempt``).
    """
    installed = False
    transports = [getattr(client, "_transport", None), *getattr(client, "_mounts", {}).values()]
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        inner = getattr(pool, "_network_backend", None)
        if isinstance(inner, httpcore.NetworkBackend):
            pool._network_backend = _DeadlineBackend(inner, deadline)  # type: ignore[union-attr]
            installed = True
    return installed


def _decode_page(content: bytes) -> Any:
    """A ``/studies`` page; one study nested too deeply for msgspec does not lose the page."""
    try:
        return _PAGE.decode(content)
    except RecursionError:
        return page_from_nested(content)


class CtgovClient:
    """Minimal, polite ClinicalTrials.gov API v2 client.

    Parameters
    ----------
    client : httpx.Client, optional
        Injected HTTP client (tests pass one with a ``MockTransport``); owned by the caller.
    base_url : str
        API root, default ``https://clinicaltrials.gov/api/v2``.
    rate_limit : float or None
        Maximum requests per second (``None`` or 0: no limit).
    max_retries : int
        Retries per request after the first attempt.
    timeout : float
        Seconds one request may take in all: connect, headers and body (a server that
        trickles its answer is cut off then, and the request retried).
    backoff : float
        Base delay in seconds; attempt ``n`` waits ``uniform(0, backoff * 2**n)`` capped at
        ``max_backoff`` (full jitter), or ``Retry-After`` when the server says so.
    max_backoff : float
        Upper bound of one wait, ``Retry-After`` included.
    sleep, clock : callable
        Injected for tests (no real waiting).
    seed : int, optional
        Seed of the jitter generator (a private ``random.Random``, never the global one).
    """

    def __init__(
        self,
        client: httpx.Client | None = None,
        base_url: str = DEFAULT_BASE_URL,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        max_retries: int = 5,
        timeout: float = 30.0,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if rate_limit is not None and rate_limit < 0:
            raise ConfigError(f"rate_limit must be >= 0 requests/s, got {rate_limit}")
        self.base_url = base_url.rstrip("/")
        self.rate_limit = rate_limit
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._clock = clock
        self._rng = random.Random(seed)
        self._owns_client = client is None
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": "irtscope (research harvester)", "Accept": "application/json"},
            follow_redirects=True,
        )
        self._deadline = _Deadline()
        if self._owns_client:
            _install_deadline(self._client, self._deadline)
        self._last_request: float | None = None
        self.requests_made = 0
        self.retries_made = 0

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> CtgovClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low level ---------------------------------------------------------------------
    def _throttle(self) -> None:
        if not self.rate_limit:
            return
        interval = 1.0 / self.rate_limit
        now = self._clock()
        if self._last_request is not None:
            wait = self._last_request + interval - now
            if wait > 0:
                self._sleep(wait)
                now = self._clock()
        self._last_request = now

    def _attempt(
        self, url: str, params: dict[str, Any], parse: Callable[[bytes], Any] = orjson.loads
    ) -> Any:
        self._throttle()
        self.requests_made += 1
        # One deadline for the whole request: each socket operation is cut to it (clients we
        # built, see _DeadlineBackend), and it is checked between body chunks (any client).
        deadline = time.monotonic() + self.timeout
        try:
            with (
                self._deadline.until(deadline),
                self._client.stream("GET", url, params=params, timeout=self.timeout) as response,
            ):
                chunks = []
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise _Retryable(f"timeout (the whole request took over {self.timeout}s)")
                content = b"".join(chunks)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout ({type(exc).__name__})") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # connection refused/reset, body cut short (RemoteProtocolError), ...
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code in RETRY_STATUS:
            raise _Retryable(
                f"HTTP {response.status_code}",
                _parse_retry_after(response.headers.get("Retry-After")),
            )
        if response.status_code >= 400:
            text = content[:300].decode("utf-8", "replace").strip()
            raise FetchError(f"{response.request.url} answered HTTP {response.status_code}: {text}")
        try:
            return parse(content)
        except msgspec.ValidationError as exc:  # well-formed, but not what was asked for
            raise FetchError(
                f"{url} answered something that is not a page of studies: {exc}"
            ) from exc
        except (orjson.JSONDecodeError, msgspec.DecodeError) as exc:
            # A body cut short with a matching Content-Length still fails here: retry.
            raise _Retryable(f"invalid JSON body ({exc})") from exc

    def get_json(
        self,
        path: str,
        params: dict[str, Any] | None = None,
        parse: Callable[[bytes], Any] = orjson.loads,
    ) -> Any:
        """GET ``base_url + path`` and parse JSON, retrying transient failures.

        Raises
        ------
        FetchError
            After ``max_retries`` retries, or at once on a non-retryable HTTP error; the
            message names the URL and suggests the offline route.
        """
        url = f"{self.base_url}/{path.lstrip('/')}"
        params = dict(params or {})
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                return self._attempt(url, params, parse)
            except _Retryable as exc:
                last = str(exc)
                if attempt == self.max_retries:
                    break
                delay = self._rng.uniform(0, self.backoff * 2**attempt)
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                delay = min(delay, self.max_backoff)
                self.retries_made += 1
                logger.info("%s: %s; retry %d in %.2fs", url, last, attempt + 1, delay)
                self._sleep(delay)
        raise FetchError(
            f"could not fetch {url} after {self.max_retries + 1} attempts (last error: {last}). "
            "Check the network or --base-url, or work offline: download the records and run "
            "`irtscope trials import FILE` (or pass --source FILE to `irtscope trials demo`)."
        )

    # -- endpoints ---------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        """``/version``: ``apiVersion`` and ``dataTimestamp`` (the registry's data date)."""
        value = self.get_json("version")
        return value if isinstance(value, dict) else {}

    def count(self, query: QuerySpec) -> int | None:
        """Number of studies matching ``query`` (``countTotal`` on a one-study page)."""
        page = self.get_json("studies", {**query.params(), "countTotal": "true", "pageSize": 1})
        total = page.get("totalCount") if isinstance(page, dict) else None
        return int(total) if isinstance(total, int) else None

    def page(
        self, query: QuerySpec, page_token: str | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> dict[str, Any]:
        """One page of ``/studies`` for ``query``; parameters unchanged between pages.

        ``page["studies"]`` holds each study as the bytes received (``msgspec.Raw``).
        """
        params: dict[str, Any] = {**query.params(), "pageSize": min(page_size, MAX_PAGE_SIZE)}
        if page_token:
            params["pageToken"] = page_token
        page = self.get_json("studies", params, _decode_page)
        if "studies" not in page:
            raise FetchError(
                f"{self.base_url}/studies answered something that is not a page of studies"
            )
        return page


class _Page(TypedDict, total=False):
    studies: list[msgspec.Raw]
    nextPageToken: str | None
    totalCount: int


#: Pages keep each study as the bytes the registry sent (``msgspec.Raw``), unparsed: the
#: store parses each once and keeps those bytes (minified if pretty-printed) as the study's raw
#: JSON, exactly as it does for a file of the same records.
_PAGE = msgspec.json.Decoder(_Page)


@dataclass
class QueryResult:
    """Per-query outcome of a harvest."""

    name: str
    key: str
    total_count: int | None
    hits: int
    pages: int
    #: page items that were not usable studies (counted in ``hits``, stored nowhere)
    rejected: int = 0


@dataclass
class HarvestResult:
    """What a harvest did: ``hits`` (all queries, duplicates included) -> ``unique``."""

    harvest_id: int
    data_timestamp: str | None
    resumed: bool
    queries: list[QueryResult] = field(default_factory=list)
    hits: int = 0
    unique: int = 0
    new_studies: int = 0
    new_versions: int = 0
    pages_fetched: int = 0
    failures: list[Any] = field(default_factory=list)
    #: page items of all queries that were not usable studies (not in ``hits``)
    rejected: int = 0

    def summary(self) -> str:
        rejected = f" ({self.rejected} rejected item(s) not counted)" if self.rejected else ""
        return f"{self.hits} hits -> {self.unique} unique studies{rejected}"


def harvest(
    store: Any,
    queries: Iterable[QuerySpec],
    client: CtgovClient | None = None,
    progress: ProgressCallback | None = None,
    page_size: int = MAX_PAGE_SIZE,
    refresh: bool = False,
    max_studies: int | None = None,
) -> HarvestResult:
    """Run several queries against API v2 into ``store``; resumable.

    Parameters
    ----------
    store : Store
        Open :class:`irtscope.trials.Store`; holds the harvest state.
    queries : iterable of QuerySpec
        Queries whose hits are unioned; the store keeps which queries found each study.
    client : CtgovClient, optional
        Default: a client for the public registry with the polite rate limit.
    progress : callable, optional
        ``progress(advance, total, description)`` after every page.
    page_size : int
        Studies per page (the API caps it at 1000).
    refresh : bool
        Start a new harvest even if the same queries were harvested to completion before
        (otherwise a finished harvest is not fetched again and an unfinished one resumes).
    max_studies : int, optional
        Refuse (``FetchError``) a query whose count exceeds this, before downloading it.

    Returns
    -------
    HarvestResult
    """
    queries = list(queries)
    if not queries:
        raise ConfigError("harvest needs at least one query")
    keys = [q.key() for q in queries]
    if len(set(keys)) != len(keys):
        raise ConfigError("two queries have the same parameters; remove the duplicate")
    own_client = client is None
    client = client or CtgovClient()
    try:
        data_timestamp = client.version().get("dataTimestamp")
        harvest_id, snapshot_id, resumed = store.open_harvest(
            client.base_url,
            [(q.key(), q.name, q.params()) for q in queries],
            data_timestamp,
            refresh=refresh,
        )
        result = HarvestResult(harvest_id, data_timestamp, resumed)
        for query in queries:
            key = query.key()
            state = store.harvest_query_state(harvest_id, key)
            if state["status"] != "done":
                if state["total_count"] is None:
                    total = client.count(query)
                    if max_studies is not None and total is not None and total > max_studies:
                        raise FetchError(
                            f"query {query.name!r} matches {total} studies, more than "
                            f"max_studies={max_studies}; narrow it or raise the limit"
                        )
                    store.set_query_total(harvest_id, key, total)
                    state["total_count"] = total
                if progress is not None:
                    progress(0, state["total_count"], f"query {query.name}")
                token = state["page_token"]
                page_no = int(state["pages_done"])
                hits = int(state["hits"])
                # Every token this harvest followed for the query (kept in the store, so a
                # resumed run knows them too): a registry that hands one out again would be
                # followed in a circle forever.
                followed = store.harvest_tokens(harvest_id, key)
                while True:
                    page = client.page(query, token, page_size)
                    studies = page["studies"]
                    next_token = page.get("nextPageToken") or None
                    _check_paging(
                        query.name,
                        page_no,
                        token,
                        next_token,
                        followed,
                        hits + len(studies),
                        state["total_count"],
                        page_size,
                    )
                    hits += len(studies)
                    counts = store.store_page(
                        harvest_id,
                        snapshot_id,
                        key,
                        query.name,
                        page_no,
                        studies,
                        next_token,
                        f"{client.base_url}/studies?{query.name}",
                    )
                    result.pages_fetched += 1
                    result.new_studies += counts["new_studies"]
                    result.new_versions += counts["new_versions"]
                    result.failures.extend(counts["failures"])
                    page_no += 1
                    if progress is not None:
                        progress(len(studies), state["total_count"], f"query {query.name}")
                    if not next_token:
                        break
                    followed.add(next_token)
                    token = next_token
                state = store.harvest_query_state(harvest_id, key)
            rejected = int(state["hits"]) - store.harvest_entry_count(harvest_id, key)
            result.rejected += rejected
            result.queries.append(
                QueryResult(
                    query.name,
                    key,
                    state["total_count"],
                    int(state["hits"]),
                    int(state["pages_done"]),
                    rejected,
                )
            )
        store.finish_harvest(harvest_id, snapshot_id)
        result.hits, result.unique = store.harvest_totals(harvest_id)
        return result
    finally:
        if own_client:
            client.close()


def _check_paging(
    name: str,
    page_no: int,
    token: str | None,
    next_token: str | None,
    followed: set[str],
    hits: int,
    total: int | None,
    page_size: int,
) -> None:
    """Stop a harvest whose paging goes round in circles, before that page is stored.

    A page token already followed (A, A, ... or A, B, A, ...) or more hits than the
    registry counted (``countTotal``, with a margin of 5 % or one page for records
    registered while the harvest runs) mean the registry is serving pages again. The page
    is not stored, so the harvest state stays at the last good page and a later run resumes
    there; what was stored is kept.

    Raises
    ------
    FetchError
        One line naming the query and what repeated.
    """
    problem = None
    if next_token is not None and (next_token == token or next_token in followed):
        shown = next_token if len(next_token) <= 24 else next_token[:21] + "..."
        problem = f"the registry handed out page token {shown!r} again (page {page_no + 1})"
    elif total is not None and hits > total + max(total // 20, page_size):
        problem = f"page {page_no + 1} brings the hits to {hits}, over the {total} counted"
    if problem is not None:
        raise FetchError(
            f"query {name!r}: {problem}; stopped, the {page_no} page(s) stored so far are "
            "kept and running the same fetch again resumes after them"
        )
