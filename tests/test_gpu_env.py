"""The GPU environment is one tested set: pyproject's `gpu` extra pins it, requirements/gpu-lock.txt locks
it, environment.yml installs from the lock, and the site config loads the CUDA that the lock's torch is
built for. These tests read the files only (nothing is installed or downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

LOCK = REPO_ROOT / "requirements" / "gpu-lock.txt"
# The packages whose versions make up the tested set: pinned exactly in the `gpu` extra.
KEY_PACKAGES = {"vllm", "torch", "transformers", "deepspeed", "pytorch-lightning"}
# The platform the lock is resolved for (its header: --python-version 3.11, x86_64 manylinux).
LINUX_311 = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux"}
LOCK_ENV = {**default_environment(), **LINUX_311, "platform_system": "Linux", "platform_machine": "x86_64"}


def project() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]


def locked(lock: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of a lock's `name==version` lines (the GPU lock by default)."""
    pins = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            assert not line.startswith("-"), f"the lock holds only pins, not {line!r}"
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_gpu_extra_pins_the_tested_set_and_the_lock_holds_it() -> None:
    pins = locked()
    gpu = [Requirement(r) for r in project()["optional-dependencies"]["gpu"]]
    exact = {
        canonicalize_name(r.name): next(iter(r.specifier)).version for r in gpu if "==" in str(r.specifier)
    }
    assert set(exact) >= KEY_PACKAGES, f"pin these exactly in the gpu extra: {KEY_PACKAGES - set(exact)}"
    assert {name: pins.get(name) for name in exact} == exact, "the lock and the gpu extra disagree"


def test_the_lock_satisfies_every_requirement_of_the_project() -> None:
    """Base dependencies, `gpu` and `dev`: each package is in the lock at a version its specifier allows
    (e.g. transformers < 5.20 in the base list), and the project itself is not in the lock."""
    pins = locked()
    meta = project()
    requirements = (
        meta["dependencies"] + meta["optional-dependencies"]["gpu"] + meta["optional-dependencies"]["dev"]
    )
    for req in map(Requirement, requirements):
        if req.marker is None or req.marker.evaluate(LOCK_ENV):
            name = canonicalize_name(req.name)
            assert name in pins, f"{req} is not in the lock"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"lock has {name}=={pins[name]}, not {req}"
            )
    assert canonicalize_name(meta["name"]) not in pins


def test_the_lock_says_how_it_was_made() -> None:
    lines = LOCK.read_text().splitlines()
    header = "\n".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    command = re.search(r"^#\s+(uv pip compile .*)$", header, re.M)
    assert command, "the lock's header must hold the uv pip compile command"
    for flag in (
        "pyproject.toml",
        "--extra gpu",
        "--extra dev",
        "--python-version 3.11",
        "-o requirements/gpu-lock.txt",
    ):
        assert flag in command.group(1), flag


def test_environment_yml_installs_the_lock_and_the_gpu_extra() -> None:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps  # the Python the lock is resolved for
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    # conda runs pip from the environment file's folder: paths are relative to it (the repository root).
    assert "-r requirements/gpu-lock.txt" in pip and (REPO_ROOT / "requirements" / "gpu-lock.txt").is_file()
    editable = [p for p in pip if p.startswith("-e ")]
    assert editable and re.fullmatch(r"-e \.\[(.*)\]", editable[0]), editable
    assert "gpu" in re.fullmatch(r"-e \.\[(.*)\]", editable[0]).group(1).split(",")
    # Nothing else is installed unpinned next to the lock.
    assert set(pip) == {"-r requirements/gpu-lock.txt", editable[0]}, pip


def test_the_site_config_loads_the_cuda_the_locked_torch_is_built_for() -> None:
    """torch's wheel pulls the CUDA runtime it was built against (nvidia-cuda-runtime[-cuXX] in the lock);
    DeepSpeed's JIT ops compile with the nvcc of the site's CUDA module, and torch refuses a different
    major version (torch.utils.cpp_extension checks it)."""
    pins = locked()
    runtime = [v for n, v in pins.items() if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", n)]
    assert len(runtime) == 1, f"one CUDA runtime in the lock, got {runtime}"
    torch_cuda = runtime[0].split(".")[:2]
    assert pins.get("cuda-toolkit", runtime[0]).split(".")[:2] == torch_cuda
    site = yaml.safe_load((REPO_ROOT / "conf" / "site" / "example_cluster.yaml").read_text())
    modules = [m for line in site["setup"] for m in re.findall(r"module load .*?\bcuda/(\d+)\.(\d+)", line)]
    assert modules, "the site config must load a CUDA module (module load cuda/<major>.<minor>)"
    assert all(major == torch_cuda[0] for major, _ in modules), (modules, torch_cuda)
    # Jobs read the Hugging Face cache only; compute_optimal.prefetch fills it.
    assert "export HF_HUB_OFFLINE=1" in site["setup"]
