"""The one interface every generation back end implements."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

K = TypeVar("K")


@dataclass(frozen=True)
class SamplingSettings:
    """Decoding settings shared by all requests of a call."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()


def clip_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop sequence (not included); engines that may run past one clip with it."""
    cut = min((i for i in (text.find(s) for s in stop) if i != -1), default=len(text))
    return text[:cut]


@dataclass(frozen=True)
class Request:
    """``n`` samples for one prompt; ``seed`` makes them reproducible whatever the batching."""

    prompt: str
    n: int
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str  # clipped at the first stop sequence, which is not included
    generated_tokens: int  # tokens the model produced for this sample (stop-sequence tokens included)
    finish_reason: str  # "stop" (EOS or stop sequence) or "length"
    token_ids: tuple[int, ...] = ()  # the generated ids where the engine gives them (vLLM), else empty


@dataclass(frozen=True)
class Generation:
    prompt_tokens: int
    completions: tuple[Completion, ...]


class Engine(abc.ABC):
    """Generate ``n`` samples per prompt. Engines are context managers that free their resources."""

    name: str = "engine"
    reproducible: bool = True  # the same seeds give the same samples (a hosted API may not promise it)

    @abc.abstractmethod
    def generate(self, requests: Sequence[Request], settings: SamplingSettings) -> list[Generation]:
        """One Generation per request, in request order, each with exactly ``request.n`` completions."""

    def stream(
        self, requests: Iterable[tuple[K, Request]], settings: SamplingSettings
    ) -> Iterator[tuple[K, Generation]]:
        """Each ``(key, request)``'s Generation as ``(key, generation)``, in the order they complete.

        Requests are pulled from ``requests`` only as the engine has room for them, so a caller can hand
        over a whole run and write results as they come back (the sampling stage). This default serves
        engines without continuous batching one request at a time; vLLM and the API engine override it.
        """
        for key, request in requests:
            yield key, self.generate([request], settings)[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release processes and memory (vLLM keeps GiBs until its engine core is shut down)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LazyEngine:
    """An engine started on first use and closed by its owner: a stage wraps its engine in one
    (``with LazyEngine(start) as engine``) and hands it to the runs it makes; a run that is already
    finished never starts it, and runs after the first reuse the running engine."""

    def __init__(self, start: Callable[[], Engine]) -> None:
        self._start = start
        self._engine: Engine | None = None

    @property
    def started(self) -> bool:
        return self._engine is not None

    def get(self) -> Engine:
        if self._engine is None:
            self._engine = self._start()
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> LazyEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
