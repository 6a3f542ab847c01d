"""Which accelerator a job has, found without initialising CUDA in this process.

vLLM forks its engine-core process; a parent that has called ``torch.cuda.is_available()`` has already
run ``cuInit`` (through ``cudaGetDeviceCount``), and the forked child then dies with "Cannot
re-initialize CUDA in forked subprocess". So the CUDA check runs in a short-lived child process.

A job that SLURM gave GPUs must run on them: when CUDA is not usable there (a driver too old for the
CUDA build of torch, a wrong module, a CPU build of torch) it stops with the reason, instead of falling
back to fp32 CPU training or to the vLLM-CPU settings.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from .errors import UserError

# Run by a child Python: how many CUDA devices are usable, and if none, why (torch's own warning).
_PROBE = r"""
import json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    devices, error = 0, None
    try:
        # cudaGetDeviceCount: fails (with torch's warning) for a driver too old for torch's CUDA build.
        # No allocation: every rank of a job probes, and an exclusive-process GPU takes one context.
        if torch.cuda.is_available():
            devices = torch.cuda.device_count()
    except Exception as exc:
        devices, error = 0, f"{type(exc).__name__}: {exc}"
    if not devices and error is None:
        error = "; ".join(str(w.message).strip() for w in caught) or "torch.cuda.is_available() is False"
print(json.dumps({"devices": devices, "error": error}))
"""


class DeviceError(UserError, RuntimeError):
    """The job was given GPUs, but CUDA cannot use them."""


@dataclass(frozen=True)
class Cuda:
    devices: int  # usable CUDA devices (0: none)
    error: str | None  # why there are none, where that is known
    build: str | None  # the CUDA version torch was built for (None: a CPU build)


def allocated_gpus() -> int:
    """GPUs the scheduler gave this job on this node (SLURM), 0 outside SLURM or without GPUs."""
    count = os.environ.get("SLURM_GPUS_ON_NODE")
    if count and count.strip().isdigit():
        return int(count)
    ids = os.environ.get("SLURM_STEP_GPUS") or os.environ.get("SLURM_JOB_GPUS") or ""
    return len([i for i in ids.split(",") if i.strip()])


@functools.cache
def probe_cuda() -> Cuda:
    """Usable CUDA devices, checked in a child process, so that this one never initialises CUDA."""
    import torch

    if torch.version.cuda is None:  # a CPU build: nothing to probe
        return Cuda(0, f"this torch build ({torch.__version__}) has no CUDA support", None)
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300
        )
    except subprocess.TimeoutExpired:
        return Cuda(0, "the CUDA check hung for 300 s", torch.version.cuda)
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        error = f"the CUDA check failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        return Cuda(0, error, torch.version.cuda)
    return Cuda(int(found["devices"]), found["error"], torch.version.cuda)


def cuda_devices() -> int:
    """Usable CUDA devices (0 for none); raises DeviceError where SLURM gave GPUs that CUDA cannot use."""
    cuda = probe_cuda()
    given = allocated_gpus()
    if given and not cuda.devices:
        raise DeviceError(
            f"SLURM gave this job {given} GPU(s), but CUDA is not usable: {cuda.error}. "
            + (
                f"torch is built for CUDA {cuda.build}, which the node's NVIDIA driver must support. "
                if cuda.build
                else ""
            )
            + "Check the driver, the CUDA module and the environment in the site config's setup lines "
            "(README: GPU environment); stopping rather than running on the CPU."
        )
    return cuda.devices
