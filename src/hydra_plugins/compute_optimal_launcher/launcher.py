"""hydra-submitit's launchers, with a resource request per job and failures reported with their logs.

hydra-submitit submits a sweep as one job array whose request is resolved once, from the config the
sweep starts from. A sweep that mixes models (Gemma2-9B sampling on 1 GPU, Gemma2-27B on 2; a 2-node
training job next to a 1-node one) then asks for the wrong resources for some jobs. These launchers
resolve ``hydra.launcher`` for every job of the sweep, group jobs whose requests are equal, and submit
one array per group. A job that fails (an exception, a cancelled or killed job) no longer stops the
wait for the others: when all are done, every failure is listed with its log file and the sweep
raises; finished runs are on disk, and re-running the same command redoes only what is unfinished.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

import compute_optimal.resolvers  # noqa: F401  (jobs resolve the co.* interpolations on their node)

log = logging.getLogger(__name__)

# Executor-level settings (not per-job SLURM parameters).
_INIT_KEYS = {"submitit_folder", "max_num_timeout"}


class SweepJobsFailed(RuntimeError):
    """Some jobs of a sweep failed; the message names each with its log file."""


class _GroupedLauncher(BaseSubmititLauncher):
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        """Run one job (on the node); a job that failed writes its traceback into its own log."""
        result = super().__call__(*args, **kwargs)
        if result.status == JobStatus.FAILED and isinstance(result._return_value, BaseException):
            traceback.print_exception(result._return_value)
        return result

    def job_params(self, overrides: Sequence[str]) -> dict[str, Any]:
        """The resolved launcher parameters of one job of the sweep."""
        assert self.hydra_context is not None and self.config is not None
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        params = OmegaConf.to_container(job_config.hydra.launcher, resolve=True)
        params.pop("_target_", None)
        return params

    def _executor(self, params: dict[str, Any]) -> Any:
        import submitit

        init = {"folder": params["submitit_folder"]}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in base else f"{self._EXECUTOR}_{k}": v
                for k, v in params.items()
                if k not in _INIT_KEYS
            }
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")

        groups: dict[str, list[int]] = {}
        requests: dict[str, dict[str, Any]] = {}
        for i, overrides in enumerate(job_overrides):
            params = self.job_params(overrides)
            key = json.dumps(params, sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
            requests[key] = params

        jobs: dict[int, Any] = {}
        for key, members in groups.items():
            params = requests[key]
            request = {
                k: params.get(k)
                for k in (
                    "nodes",
                    "gpus_per_node",
                    "tasks_per_node",
                    "cpus_per_task",
                    "mem_gb",
                    "timeout_min",
                )
            }
            log.info(f"array of {len(members)} job(s), each asking for {request}:")
            args = []
            for i in members:
                idx = initial_job_idx + i
                log.info(f"\t#{idx} : {' '.join(filter_overrides(job_overrides[i]))}")
                args.append(
                    (
                        list(job_overrides[i]),
                        "hydra.sweep.dir",
                        idx,
                        f"job_id_for_{idx}",
                        Singleton.get_state(),
                    )
                )
            submitted = self._executor(params).map_array(self, *zip(*args, strict=True))
            jobs.update(zip(members, submitted, strict=True))

        results: list[JobReturn] = []
        failures: list[str] = []
        for i in range(len(job_overrides)):
            job = jobs[i]
            label = (
                f"#{initial_job_idx + i} ({' '.join(filter_overrides(job_overrides[i])) or 'no overrides'})"
            )
            try:
                result = job.results()[0]
            except Exception as exc:  # killed, cancelled, timed out for good, or died before returning
                failures.append(_failure(label, job, exc))
                continue
            if result.status == JobStatus.FAILED:
                failures.append(_failure(label, job, result._return_value))
            results.append(result)
        if failures:
            raise SweepJobsFailed(
                f"{len(failures)} of {len(job_overrides)} jobs failed:\n"
                + "\n".join(failures)
                + "\nFinished runs are kept: run the same command again to redo only the unfinished ones."
            )
        return results


def _failure(label: str, job: Any, exc: BaseException | None) -> str:
    return f"  job {label}, id {job.job_id}: {_reason(job, exc)}\n    log: {job.paths.stderr}"


def _reason(job: Any, exc: BaseException | None) -> str:
    """One line on why a job failed: the entry point's `error: ...` line (a user error, which exits
    the job) from its log, else the last line of the exception (submitit's includes the traceback)."""
    try:
        errors = [
            line
            for line in job.paths.stderr.read_text(errors="replace").splitlines()
            if line.startswith("error: ")
        ]
    except OSError:
        errors = []
    if errors:
        return errors[-1]
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] if exc is not None else []
    return lines[-1] if lines else type(exc).__name__


class GroupedSlurmLauncher(_GroupedLauncher):
    _EXECUTOR = "slurm"


class GroupedLocalLauncher(_GroupedLauncher):
    _EXECUTOR = "local"
