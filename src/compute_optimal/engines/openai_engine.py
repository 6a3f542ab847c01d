"""OpenAI-compatible back end: any server that speaks the completions (or chat completions) API.

Hosted APIs (a base URL and a key read from the environment variable the model config names: never from a
config file, never written anywhere) and self-hosted servers (``vllm serve``, SGLang; :mod:`.server`
starts a vLLM server for a job). Requests run on a pool of ``max_in_flight`` threads; each is retried on
429, 5xx, timeouts and dropped connections with exponential backoff and full jitter, waiting at least what
``Retry-After`` asks, and the run fails with the last error after ``max_attempts`` attempts (every request
has connect and read timeouts, so nothing hangs).

What the server billed is kept per request: ``usage.prompt_tokens`` once per prompt and each sample's
completion tokens (from the choice's ``token_ids`` where the server returns them, e.g. vLLM with
``return_token_ids``; else ``usage.completion_tokens`` split over the samples by text length, which the
summary says).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError
from .base import Completion, Engine, Generation, Request, SamplingSettings, clip_at_stop

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_sleep = time.sleep  # the backoff's wait (one name, so a test can watch the waits)


class EngineError(UserError, RuntimeError):
    """A server that keeps failing (after the retries), refuses a request, or has no key."""


@dataclass
class ApiUsage:
    """What the server billed and how the run got it, summed over the requests of an engine."""

    requests: int = 0
    attempts: int = 0
    retries_by_reason: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_counts: str = "server token ids"  # or "usage split by text length"
    seed_sent: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "attempts": self.attempts,
            "retries": dict(sorted(self.retries_by_reason.items())),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "token_counts": self.token_counts,
        }


class OpenAIEngine(Engine):
    """Sample ``n`` completions per prompt from an OpenAI-compatible server."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        endpoint: str = "completions",
        max_in_flight: int = 16,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 300.0,
        send_seed: bool = True,
        reproducible_seeds: bool = False,
        extra_body: dict[str, Any] | None = None,
        name: str = "openai",
    ) -> None:
        import httpx

        if endpoint not in ("completions", "chat"):
            raise EngineError(f"engine endpoint must be completions or chat, got {endpoint!r}")
        if max_in_flight < 1 or max_attempts < 1:
            raise EngineError("engine max_in_flight and max_attempts must be >= 1")
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise EngineError(
                    f"the API key is read from ${api_key_env}, which is not set in this environment"
                )
        self.name = name
        # Hosted APIs treat a seed as best effort: samples are reproducible only where the server promises
        # it (a vLLM server: yes). The run's summary says which (``reproducible``).
        self.reproducible = bool(send_seed and reproducible_seeds)
        self.model = model
        self.endpoint = endpoint
        self.max_in_flight = int(max_in_flight)
        self.max_attempts = int(max_attempts)
        self.backoff_s, self.max_backoff_s = float(backoff_s), float(max_backoff_s)
        self.send_seed = bool(send_seed)
        self.extra_body = dict(extra_body or {})
        self.usage = ApiUsage(seed_sent=self.send_seed)
        self._lock = threading.Lock()
        self._rng = random.Random(0)  # jitter only: never decides what is sampled
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(
                max_connections=self.max_in_flight, max_keepalive_connections=self.max_in_flight
            ),
        )

    # --- the Engine interface ------------------------------------------------------------------------

    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        out: dict[int, Generation] = dict(self.stream(enumerate(requests), settings))
        return [out[i] for i in range(len(requests))]

    def stream(
        self, requests: Iterable[tuple[Any, Request]], settings: SamplingSettings
    ) -> Iterator[tuple[Any, Generation]]:
        """Keep ``max_in_flight`` requests in flight; yield each ``(key, Generation)`` as it completes."""
        pending = iter(requests)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="openai") as pool:
            running: dict[Future, Any] = {}
            try:
                while True:
                    while len(running) < self.max_in_flight:
                        item = next(pending, None)
                        if item is None:
                            break
                        key, request = item
                        running[pool.submit(self._complete, request, settings)] = key
                    if not running:
                        return
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield running.pop(future), future.result()
            finally:
                for future in running:
                    future.cancel()

    def close(self) -> None:
        self._client.close()

    # --- one request -----------------------------------------------------------------------------------

    def _body(self, request: Request, settings: SamplingSettings) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "n": request.n,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_new_tokens,
            **self.extra_body,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if self.send_seed:
            body["seed"] = request.seed
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body

    def _complete(self, request: Request, settings: SamplingSettings) -> Generation:
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        data = self._post(path, self._body(request, settings))
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != request.n:
            raise EngineError(f"the server returned {len(choices)} choices for n={request.n}")
        usage = data.get("usage") or {}
        texts = [_text(c) for c in choices]
        counts = [len(c["token_ids"]) if c.get("token_ids") is not None else None for c in choices]
        if None in counts:
            counts = _split(int(usage.get("completion_tokens") or 0), texts)
            split = True
        else:
            split = False
        with self._lock:
            self.usage.requests += 1
            self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.usage.completion_tokens += int(usage.get("completion_tokens") or sum(counts))
            if split:
                self.usage.token_counts = "usage split by text length"
        completions = tuple(
            Completion(
                clip_at_stop(text, settings.stop),
                int(count),
                "length" if c.get("finish_reason") == "length" else "stop",
            )
            for text, count, c in zip(texts, counts, choices, strict=True)
        )
        return Generation(prompt_tokens=int(usage.get("prompt_tokens") or 0), completions=completions)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        last = ""
        for attempt in range(1, self.max_attempts + 1):
            with self._lock:
                self.usage.attempts += 1
            wait_s = None
            try:
                response = self._client.post(path, json=body)
            except (httpx.TimeoutException, httpx.TransportError) as exc:  # timeouts, dropped connections
                reason, last = type(exc).__name__, f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        reason, last = "bad_json", f"a response that is not JSON: {response.text[:200]!r}"
                elif response.status_code in RETRY_STATUS:
                    reason, last = (
                        str(response.status_code),
                        f"HTTP {response.status_code}: {response.text[:200]}",
                    )
                    wait_s = _retry_after(response.headers.get("retry-after"))
                else:  # 4xx other than the retryable ones: the request itself is wrong
                    raise EngineError(
                        f"the server refused the request (HTTP {response.status_code}): {response.text[:500]}"
                    )
            with self._lock:
                self.usage.retries_by_reason[reason] = self.usage.retries_by_reason.get(reason, 0) + 1
            if attempt == self.max_attempts:
                break
            backoff = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            delay = max(wait_s or 0.0, self._rng.uniform(0, backoff))  # full jitter, at least Retry-After
            log.info(
                "request failed (%s); retry %d/%d in %.1f s", last, attempt, self.max_attempts - 1, delay
            )
            _sleep(delay)
        raise EngineError(
            f"the server at {self._client.base_url} failed {self.max_attempts} attempts; last: {last}"
        )


def _text(choice: dict[str, Any]) -> str:
    if "text" in choice:
        return choice.get("text") or ""
    return (choice.get("message") or {}).get("content") or ""


def _split(total: int, texts: Sequence[str]) -> list[int]:
    """``total`` tokens over the samples in proportion to their text length (largest remainder)."""
    weights = [max(len(t), 1) for t in texts]
    shares = [total * w / sum(weights) for w in weights]
    counts = [int(s) for s in shares]
    for i in sorted(range(len(texts)), key=lambda i: shares[i] - counts[i], reverse=True)[
        : total - sum(counts)
    ]:
        counts[i] += 1
    return counts


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
