"""A small HTTP proxy that injects faults between a client and a real server (for the API engine's tests).

Requests to ``/v1/...completions`` follow a repeating schedule of faults: ``ok`` (forwarded), ``429`` (with
``Retry-After``), ``500``, ``drop_before`` (the connection closes before the server sees the request),
``drop_after`` (the server did the work; the answer is lost), ``slow`` (forwarded after a delay), ``hang``
(no answer until the client's read timeout). Every other path is forwarded as it is. ``counts`` says what
was injected.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, schedule: list[str], *, retry_after: int = 1, slow_s: float = 1.5,
                 hang_s: float = 30.0) -> None:  # fmt: skip
        self.upstream = upstream.rstrip("/")
        self.counts: Counter[str] = Counter()
        self._schedule = itertools.cycle(schedule)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if not self.path.endswith("completions"):
                    self._forward(body)
                    return
                with proxy._lock:
                    fault = next(proxy._schedule)
                    proxy.counts[fault] += 1
                if fault == "429":
                    self._reply(429, b'{"error": "rate limited"}', {"Retry-After": str(retry_after)})
                elif fault == "500":
                    self._reply(500, b'{"error": "internal"}')
                elif fault == "drop_before":
                    self.close_connection = True
                elif fault == "drop_after":
                    proxy._send(self.path, body)
                    self.close_connection = True
                elif fault == "hang":
                    time.sleep(hang_s)
                    self.close_connection = True
                else:
                    if fault == "slow":
                        time.sleep(slow_s)
                    self._forward(body)

            def _forward(self, body: bytes) -> None:
                response = proxy._send(self.path, body, method=self.command)
                self._reply(response.status_code, response.content, {"Content-Type": "application/json"})

            def _reply(self, status: int, content: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _send(self, path: str, body: bytes, method: str = "POST") -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        return httpx.request(method, self.upstream + path, content=body or None, headers=headers, timeout=300)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
