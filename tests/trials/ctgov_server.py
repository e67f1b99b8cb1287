"""A local stand-in for ClinicalTrials.gov API v2, for harvester tests.

It serves studies given at start-up (the tests pass records read from ``../shared/data``),
filters on ``query.cond`` / ``query.term`` / ``query.intr`` / ``filter.overallStatus`` /
``filter.advanced`` (``AREA[StartDate]RANGE[a,b]`` only), pages with opaque tokens that are
only valid with unchanged parameters (as the real API requires), and returns ``totalCount``
when asked. Queued faults imitate a misbehaving registry on the next ``/studies`` requests:

``"429"``   429 with ``Retry-After`` (``retry_after`` seconds)
``"500"``   500 Internal Server Error
``"stall"`` sleep ``stall_seconds`` before answering (longer than the client timeout)
``"cut"``   announce the full ``Content-Length`` but send half the body, then close
``"drop"``  close the connection without answering
``"trickle"`` send the headers, then the body one byte every ``trickle_seconds``
``"trickle_headers"`` send even the status line and headers one byte at a time

Paging can be made to misbehave for every query: ``token_cycle=1`` makes every page point
at the same next page again (tokens A, A, ...), ``token_cycle=2`` alternates two (A, B, A,
...), and ``endless=True`` hands out a fresh token forever, each serving the second page
again. ``junk`` items (any JSON values) lead the hits of every query and are counted in
``totalCount``, like records the client must reject.

It binds 127.0.0.1 on a free port and never touches the internet.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

PAGING_PARAMS = {"pageSize", "pageToken", "countTotal"}
_RANGE_RE = re.compile(r"AREA\[StartDate\]RANGE\[([^,\]]*),([^\]]*)\]", re.IGNORECASE)


def _lower_list(values: Iterable[Any]) -> list[str]:
    return [str(v).lower() for v in values if v is not None]


def matches(study: dict[str, Any], params: dict[str, str]) -> bool:
    """Whether ``study`` matches the (non-paging) query parameters; a simplified Essie."""
    ps = study.get("protocolSection", {})
    if "query.cond" in params:
        cond = ps.get("conditionsModule", {})
        hay = _lower_list(cond.get("conditions", []) + cond.get("keywords", []))
        if not any(params["query.cond"].lower() in h for h in hay):
            return False
    if "query.intr" in params:
        hay = []
        for item in ps.get("armsInterventionsModule", {}).get("interventions", []):
            hay += _lower_list([item.get("name"), *item.get("otherNames", [])])
        if not any(params["query.intr"].lower() in h for h in hay):
            return False
    if (
        "query.term" in params
        and params["query.term"].lower() not in orjson.dumps(ps).decode().lower()
    ):
        return False
    if "filter.overallStatus" in params:
        wanted = set(re.split(r"[,|]", params["filter.overallStatus"]))
        if ps.get("statusModule", {}).get("overallStatus") not in wanted:
            return False
    if "filter.advanced" in params:
        found = _RANGE_RE.search(params["filter.advanced"])
        if found:
            low, high = (v.strip() for v in found.groups())
            start = ps.get("statusModule", {}).get("startDateStruct", {}).get("date")
            if not start:
                return False
            if low.upper() != "MIN" and start < low:
                return False
            if high.upper() != "MAX" and start > high:
                return False
    return True


class FakeCtgov:
    """Threaded fake API v2 server; use as a context manager.

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>/api/v2``.
    faults : collections.deque
        Faults to apply, in order, to the next ``/studies`` requests.
    log : list of dict
        Every request: ``path``, ``params``, ``status``, ``fault``.
    """

    def __init__(
        self,
        studies: list[dict[str, Any]],
        data_timestamp: str = "2026-01-15T08:00:00",
        retry_after: str = "3",
        stall_seconds: float = 1.0,
        trickle_seconds: float = 0.1,
        token_cycle: int = 0,
        endless: bool = False,
        junk: list[Any] | None = None,
    ) -> None:
        self.studies = studies
        self.trickle_seconds = trickle_seconds
        self.token_cycle = token_cycle
        self.endless = endless
        self.junk = list(junk or [])
        self.data_timestamp = data_timestamp
        self.retry_after = retry_after
        self.stall_seconds = stall_seconds
        self.faults: collections.deque[str] = collections.deque()
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> FakeCtgov:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                try:
                    fake._handle(self)
                except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v2"

    # -- helpers for tests --------------------------------------------------------------
    def expected(self, params: dict[str, str]) -> list[str]:
        """NCT ids a query should return, in serving order."""
        return [
            s["protocolSection"]["identificationModule"]["nctId"]
            for s in self.studies
            if matches(s, params)
        ]

    def page_requests(self) -> list[dict[str, Any]]:
        """Successful ``/studies`` data requests (not counts)."""
        return [
            e
            for e in self.log
            if e["path"].endswith("/studies") and e["status"] == 200 and not e["count_only"]
        ]

    # -- request handling ---------------------------------------------------------------
    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        entry = {
            "path": url.path,
            "params": params,
            "status": None,
            "fault": None,
            "count_only": params.get("countTotal") == "true" and params.get("pageSize") == "1",
        }
        with self._lock:
            self.log.append(entry)
            fault = self.faults.popleft() if url.path.endswith("/studies") and self.faults else None
        entry["fault"] = fault
        if url.path.endswith("/version"):
            entry["status"] = 200
            body = orjson.dumps({"apiVersion": "2.0.5", "dataTimestamp": self.data_timestamp})
            self._send(handler, 200, body)
            return
        if not url.path.endswith("/studies"):
            entry["status"] = 404
            self._send(handler, 404, b'"not found"')
            return
        if fault == "429":
            entry["status"] = 429
            self._send(handler, 429, b'"too many requests"', {"Retry-After": self.retry_after})
            return
        if fault == "500":
            entry["status"] = 500
            self._send(handler, 500, b'"internal error"')
            return
        if fault == "drop":
            entry["status"] = "dropped"
            handler.close_connection = True
            return
        if fault == "stall":
            time.sleep(self.stall_seconds)
        status, body = self._studies(params)
        if fault in ("trickle", "trickle_headers"):
            entry["status"] = f"{status}+{fault}"
            self._trickle(handler, status, body, headers_too=fault == "trickle_headers")
            return
        entry["status"] = status if fault is None else f"{status}+{fault}"
        if fault == "cut":
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            return
        self._send(handler, status, body)

    def _trickle(
        self, handler: BaseHTTPRequestHandler, status: int, body: bytes, headers_too: bool
    ) -> None:
        head = (
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        if not headers_too:
            handler.wfile.write(head)
            handler.wfile.flush()
            head = b""
        for i in range(len(head) + len(body)):
            handler.wfile.write((head + body)[i : i + 1])
            handler.wfile.flush()
            time.sleep(self.trickle_seconds)

    def _studies(self, params: dict[str, str]) -> tuple[int, bytes]:
        query = {k: v for k, v in params.items() if k not in PAGING_PARAMS}
        signature = json.dumps(query, sort_keys=True)
        offset = 0
        token = params.get("pageToken")
        if token:
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError:
                return 400, b'"invalid pageToken"'
            if decoded.get("sig") != signature:
                return 400, b'"parameters changed between pages"'
            offset = int(decoded["offset"])
        size = int(params.get("pageSize") or 10) or 10
        size = min(size, 1000)
        hits = [*self.junk, *(s for s in self.studies if matches(s, query))]
        page: dict[str, Any] = {"studies": hits[offset : offset + size]}
        following: dict[str, Any] = {"offset": offset + size, "sig": signature}
        if self.token_cycle:  # the next page after page k is page 1 + k % cycle: a loop
            following["offset"] = size * (1 + (offset // size) % self.token_cycle)
        elif self.endless:  # a new token every time, always for page 2 again
            with self._lock:
                self._issued = getattr(self, "_issued", 0) + 1
            following.update(offset=size, n=self._issued)
        if offset + size < len(hits) or self.token_cycle or self.endless:
            page["nextPageToken"] = base64.urlsafe_b64encode(
                json.dumps(following).encode()
            ).decode()
        if params.get("countTotal") == "true" and not token:
            page["totalCount"] = len(hits)
        return 200, orjson.dumps(page)
