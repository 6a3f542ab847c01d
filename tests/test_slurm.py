"""Sweeps through a real SLURM (scripts/slurm_cluster.sh: one node, with accounting) via submitit.

A sweep of run_sample.py with hydra/launcher=submitit_slurm becomes SLURM job arrays, one per distinct
resource request; these tests check that its results (problem shards merged) equal those of one job
per run under the local launcher, that a job cancelled mid-run, requeued by SLURM (what preemption
does) or stopped by its time limit ends with every sample exactly once, and that a recipe's dependent
stages (sample -> train -> evaluate) run one after another as SLURM jobs.
They need root the first time (the script installs Debian packages and starts system daemons) and skip,
with the reason, where the cluster cannot start.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

# One xdist group: the tests share one cluster (a session fixture: one start per worker) and its 2 CPUs.
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

REPO_ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO_ROOT / "scripts" / "slurm_cluster.sh"

# A four-job sweep on the tiny random models (seconds per job): two models whose sampling jobs ask for
# different time limits (conf/model: 10 and 15 min), each run split over two problem shards.
SWEEP = (
    "model=tiny_random,tiny_random_x2",
    "budget=low",
    "engine=hf",
    "dataset.limit=3",
    "sampling.chunk_size=1",
    "sampling.num_shards=2",
    "sampling.shard=0,1",
    "sampling.max_new_tokens=6",
    "logger=none",
)
# The same runs, one job each.
UNSHARDED = tuple(o for o in SWEEP if not o.startswith(("sampling.shard", "sampling.num_shards")))
PROBLEMS = 16
# One job with one problem per chunk, ~20 s of sampling: long enough to be interrupted mid-run, even
# though a cancelled job keeps running for KillWait (5 s) after SIGTERM, which submitit ignores.
INTERRUPTED = (
    "model=tiny_random",
    "budget=low",
    "engine=hf",
    "engine.hf.batch_size=2",  # one request (2 samples, no padding) per generate call: the pace sized above
    f"dataset.limit={PROBLEMS}",
    "sampling.chunk_size=1",
    "sampling.max_new_tokens=48",
    "logger=none",
)
RUN_DIR = Path("sample/arith/tiny_random/low-compute/seed0")
# Summary fields that differ between two runs of the same config: timings, paths, the resume count.
VOLATILE = {"new_samples", "samples_path", "wandb_dir", "shards"}
FINISHED_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}


# --- the cluster ----------------------------------------------------------------------------------


def _cluster(command: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local one-node cluster: used if it is already up, else started (and stopped afterwards)."""
    if _cluster("status", timeout=60).returncode == 0:
        yield
        return
    if os.geteuid() != 0:
        pytest.skip(f"no SLURM cluster running, and starting one needs root ({CLUSTER_SCRIPT} start)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu only)")
    started = time.time()
    proc = _cluster("start")
    print(proc.stdout, proc.stderr, sep="\n")
    if proc.returncode != 0:
        pytest.skip(
            f"{CLUSTER_SCRIPT} start failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    print(f"SLURM cluster started in {time.time() - started:.1f} s")
    yield
    _cluster("stop", timeout=120)


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's outputs root (the launched jobs inherit the environment through sbatch)."""
    root = tmp_path / "outputs"
    monkeypatch.setenv("COMPUTE_OPTIMAL_OUTPUTS", str(root))
    monkeypatch.setenv("WANDB_MODE", "offline")
    return root


# --- launching sweeps -----------------------------------------------------------------------------


def _command(launcher: str, overrides: tuple[str, ...] | list[str]) -> list[str]:
    return [sys.executable, "run_sample.py", "-m", *overrides, f"hydra/launcher={launcher}"]


def _env(outputs: Path) -> dict[str, str]:
    # One PyTorch thread, as the site's setup line gives SLURM jobs (1 CPU each): local and SLURM runs
    # compute alike, and a run does not slow down 10x when other processes share the machine.
    return {
        **os.environ,
        "COMPUTE_OPTIMAL_OUTPUTS": str(outputs),
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }


def run_ok(outputs: Path, *command: str, timeout: float = 480) -> subprocess.CompletedProcess:
    """Run ``python <command>`` from the repository with this test's environment; fail with its output
    and the SLURM jobs' logs unless it succeeds."""
    proc = subprocess.run(
        [sys.executable, *command],
        cwd=REPO_ROOT,
        env=_env(outputs),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command[:2])} failed (exit {proc.returncode})\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            f"\njob logs:\n{job_logs(outputs)[-6000:]}"
        )
    return proc


def sweep(outputs: Path, launcher: str, *overrides: str, timeout: float = 480) -> subprocess.CompletedProcess:
    """Run a multirun of run_sample.py to its end; fail with its output unless it succeeds."""
    return run_ok(outputs, *_command(launcher, overrides)[1:], timeout=timeout)


def start_sweep(outputs: Path, launcher: str, *overrides: str) -> subprocess.Popen:
    log = outputs.parent / "sweep.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        return subprocess.Popen(
            _command(launcher, overrides), cwd=REPO_ROOT, env=_env(outputs), stdout=f, stderr=f
        )


def job_folders(outputs: Path) -> dict[str, Path]:
    """submitit's per-job folders of every sweep under ``outputs``, by SLURM job id: "<array>_<task>"
    for the tasks of an array, "<job>" for a sweep of one job (submitit submits it without an array)."""
    return {p.parent.name: p.parent for p in outputs.glob("hydra/multirun/*/submitit/*/*_submitted.pkl")}


def job_logs(outputs: Path) -> str:
    return "\n".join(
        f"== {p}\n{p.read_text(errors='replace')}"
        for p in sorted(outputs.glob("hydra/multirun/*/submitit/*/*_log.*"))
    )


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep exited ({proc.returncode}) before {what}")
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def chunk_files(outputs: Path) -> list[Path]:
    return sorted((outputs / RUN_DIR / "chunks").glob("chunk-*.parquet"))


# --- SLURM's records ------------------------------------------------------------------------------


def sacct_attempts(job_id: str, timeout: float = 60) -> list[tuple[str, str, str]]:
    """Every attempt of a job (requeues included) as (state, start, end), oldest first, once the last
    one is over. sacct lags slurmctld by a moment, so poll."""
    deadline = time.time() + timeout
    while True:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-D", "-j", job_id, "-o", "JobID,State,Start,End"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        attempts = [(state.split()[0], start, end) for jid, state, start, end in rows if jid == job_id]
        if attempts and attempts[-1][0] in FINISHED_STATES:
            return attempts
        if time.time() > deadline:
            raise AssertionError(f"sacct never showed job {job_id} finished: {out!r}")
        time.sleep(1)


def sacct_submitted(job_id: str) -> int:
    """When SLURM accepted the job (whole seconds since the epoch)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "JobID,Submit"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (submit,) = [line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == job_id]
    return int(seconds(submit))


def seconds(timestamp: str) -> float:
    return time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%S"))


# --- results --------------------------------------------------------------------------------------


def stable_summary(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in VOLATILE and not k.endswith(("_s", "_at"))}


def assert_exactly_once(run_dir: Path, problems: int, samples_per_problem: int) -> pd.DataFrame:
    frame = pd.read_parquet(run_dir / "samples.parquet")
    keys = frame[["problem_id", "sample_index"]]
    assert not keys.duplicated().any(), "a sample was drawn twice"
    assert frame["problem_id"].nunique() == problems
    assert sorted(frame["sample_index"].unique()) == list(range(samples_per_problem))
    assert len(frame) == problems * samples_per_problem
    return frame


def assert_same_results(run_dir: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(
        pd.read_parquet(run_dir / "samples.parquet"), pd.read_parquet(reference / "samples.parquet")
    )
    assert stable_summary(run_dir) == stable_summary(reference)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The INTERRUPTED config run from start to end by Hydra's basic launcher: what resumed runs must equal."""
    root = tmp_path_factory.mktemp("uninterrupted") / "outputs"
    sweep(root, "local", *INTERRUPTED)
    return root / RUN_DIR


# --- the tests ------------------------------------------------------------------------------------


def test_sweep_is_slurm_arrays_with_the_local_launchers_results(
    slurm_cluster, outputs: Path, tmp_path: Path
) -> None:
    sweep(outputs, "submitit_slurm", *SWEEP)
    jobs = job_folders(outputs)
    arrays = sorted({name.split("_")[0] for name in jobs})
    # One array per resource request: each model's two shards share one.
    assert len(arrays) == 2 and sorted(jobs) == sorted(f"{a}_{i}" for a in arrays for i in (0, 1)), jobs
    limits = {}
    for array in arrays:
        script = next(outputs.glob(f"hydra/multirun/*/submitit/{array}/{array}_submission.sh")).read_text()
        # The site's partition, no GPU on this machine, and the model's own time limit.
        for line in ("--array=0-1", "--partition=debug", "--gpus-per-node=0", "--cpus-per-task=1"):
            assert line in script, script
        limit = int(script.split("#SBATCH --time=")[1].split()[0])
        logs = "".join((jobs[f"{array}_{t}"] / f"{array}_{t}_0_log.out").read_text() for t in (0, 1))
        limits[limit] = {m for m in ("tiny_random", "tiny_random_x2") if f" - {m} on arith" in logs}
    assert limits == {10: {"tiny_random"}, 15: {"tiny_random_x2"}}, limits
    # SLURM ran every task (accounting recorded them), and each ran inside its SLURM job.
    for name, folder in jobs.items():
        assert [a[0] for a in sacct_attempts(name)] == ["COMPLETED"]
        assert f"JobEnvironment(job_id={name}," in (folder / f"{name}_0_log.out").read_text()
        assert (folder / f"{name}_0_result.pkl").is_file()

    # The shards merged into the table (and ledger) one job per run writes.
    local = tmp_path / "local"
    sweep(local, "local", *UNSHARDED)
    for model in ("tiny_random", "tiny_random_x2"):
        run = Path(f"sample/arith/{model}/low-compute/seed0")
        assert_same_results(outputs / run, local / run)
        summary = json.loads((outputs / run / "summary.json").read_text())
        assert summary["num_samples"] > 0 and [r["shard"] for r in summary["shards"]] == [0, 1]
        assert sum(r["new_samples"] for r in summary["shards"]) == summary["num_samples"]


def test_cancelled_job_is_finished_by_the_relaunched_sweep(
    slurm_cluster, outputs: Path, uninterrupted: Path
) -> None:
    """scancel mid-run: the sweep fails; launching it again finishes the run, every sample exactly once."""
    proc = start_sweep(outputs, "submitit_slurm", *INTERRUPTED)
    try:
        wait_for(lambda: len(chunk_files(outputs)) >= 2, 300, "two chunks", proc)
        (job,) = job_folders(outputs)
        subprocess.run(["scancel", job], check=True)
        assert proc.wait(timeout=240) != 0, "a sweep whose job was cancelled must fail"
    finally:
        proc.kill()
    assert [a[0] for a in sacct_attempts(job)] == ["CANCELLED"]
    done = len(chunk_files(outputs))  # the job is dead: nothing more is written
    assert 2 <= done < PROBLEMS, "the cancel should land mid-run"
    assert not (outputs / RUN_DIR / "summary.json").exists()

    sweep(outputs, "submitit_slurm", *INTERRUPTED)
    assert_exactly_once(outputs / RUN_DIR, problems=PROBLEMS, samples_per_problem=2)
    assert_same_results(outputs / RUN_DIR, uninterrupted)
    # The relaunch drew only what the cancelled job had not written.
    summary = json.loads((outputs / RUN_DIR / "summary.json").read_text())
    assert summary["new_samples"] == (PROBLEMS - done) * 2


def test_job_requeued_by_slurm_resumes(slurm_cluster, outputs: Path, uninterrupted: Path) -> None:
    """`scontrol requeue` (what preemption with PreemptMode=REQUEUE does): SLURM kills the job and runs it
    again; the same sweep command finishes, with every sample exactly once."""
    proc = start_sweep(outputs, "submitit_slurm", *INTERRUPTED)
    try:
        wait_for(lambda: len(chunk_files(outputs)) >= 2, 300, "two chunks", proc)
        (job,) = job_folders(outputs)
        subprocess.run(["scontrol", "requeue", job], check=True)
        assert proc.wait(timeout=300) == 0, (outputs.parent / "sweep.log").read_text()[-3000:]
    finally:
        proc.kill()
    assert [a[0] for a in sacct_attempts(job)] == ["REQUEUED", "COMPLETED"]
    assert_exactly_once(outputs / RUN_DIR, problems=PROBLEMS, samples_per_problem=2)
    assert_same_results(outputs / RUN_DIR, uninterrupted)
    summary = json.loads((outputs / RUN_DIR / "summary.json").read_text())
    assert 0 < summary["new_samples"] < PROBLEMS * 2, "the second attempt must resume, not start over"


def test_time_limit_requeues_until_the_run_is_done(slurm_cluster, outputs: Path) -> None:
    """A 1-minute limit and more than a minute of work: SLURM signals the job before its limit, submitit
    checkpoints and requeues it, and each attempt resumes from the finished chunks.

    SLURM checks time limits every 30 s, so the signal (the site's signal_delay_s=10) lands 20-50 s into
    an attempt, and a requeued job waits cred_expire (10 s here) before it starts again: ~1 min per
    attempt. More requeues than the site's 3 are allowed so that a busy machine only makes it slower."""
    problems = 80  # x 2 samples x 64 tokens: ~80 s of sampling on one thread of this machine
    started = time.time()
    sweep(
        outputs,
        "submitit_slurm",
        "model=tiny_random",
        "budget=low",
        "engine=hf",
        "engine.hf.batch_size=2",  # one request per generate call: the pace sized above
        f"dataset.limit={problems}",
        "sampling.chunk_size=1",
        "sampling.max_new_tokens=64",
        "logger=none",
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.max_num_timeout=8",
        timeout=560,
    )
    elapsed = time.time() - started
    ((job, folder),) = job_folders(outputs).items()
    assert "#SBATCH --time=1\n" in next(folder.parent.glob("*/*_submission.sh")).read_text()
    attempts = sacct_attempts(job)
    states = [a[0] for a in attempts]
    assert states[-1] == "COMPLETED" and states[:-1] and set(states[:-1]) == {"REQUEUED"}, states
    ran = sum(seconds(end) - seconds(start) for _, start, end in attempts)
    assert ran > 60, f"the job ran {ran} s in all, expected more than its 1-min limit"
    log = (folder / f"{job}_0_log.out").read_text()
    submitit_lines = [line for line in log.splitlines() if line.startswith("submitit ")]
    assert sum("Caught signal SIGUSR2" in line for line in submitit_lines) == len(states) - 1
    assert sum("Requeued job" in line for line in submitit_lines) == len(states) - 1
    assert "chunks already done" in log  # a requeued attempt resumed from the chunks of an earlier one
    run_dir = outputs / RUN_DIR
    assert_exactly_once(run_dir, problems=problems, samples_per_problem=2)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_samples"] == problems * 2 and summary["new_samples"] < problems * 2
    print(f"{len(states)} attempts ({states}), {elapsed:.0f} s")


# A recipe whose stages depend on each other, every stage a sweep of SLURM jobs: SmolLM2 samples 3
# one-step problems (8 samples each: some are correct), learns from its correct samples for 2 steps,
# and the student is evaluated greedily on 2 test problems. Each job gets 1 CPU (the site's request).
CHAIN = """
name: slurm_chain
common: [experiment=quick, hydra/launcher=submitit_slurm, dataset.limit=3, "dataset.loader.levels=[1]",
         budget=custom, budget.reference_samples=4]
stages:
  - name: sample
    script: run_sample.py
    multirun: true
    overrides: [model=smollm2_135m, engine=hf, sampling.max_new_tokens=48, progress=false]
  - name: train
    script: run_train.py
    multirun: true
    overrides: [regime=self_improvement, data.sampler=wc, train.max_steps=2, train.batch_size=2,
                train.max_length=160, progress=false]
  - name: evaluate
    script: run_eval.py
    multirun: true
    overrides: [task=evaluate, task.student.regime=self_improvement, task.student.sampler=wc, engine=hf,
                task.limit=2, task.num_samples=0, task.max_new_tokens=32, progress=false]
"""


def test_recipe_stages_run_as_dependent_slurm_jobs(slurm_cluster, outputs: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "slurm_chain.yaml"
    recipe.write_text(CHAIN)
    proc = run_ok(outputs, "-m", "compute_optimal.recipes", str(recipe), timeout=1200)
    root = outputs / "quick"  # experiment=quick keeps its own outputs folder
    sample_dir = root / "sample/arith/smollm2_135m/custom-s4-compute/seed0"
    train_dir = root / "train/arith/self_improvement/smollm2_135m/wc-custom-s4-compute/seed0"
    eval_dir = root / "eval/arith/self_improvement/smollm2_135m/wc-custom-s4-compute/seed0/greedy"
    sampled = json.loads((sample_dir / "summary.json").read_text())
    trained = json.loads((train_dir / "train_summary.json").read_text())
    evaluated = json.loads((eval_dir / "summary.json").read_text())
    assert sampled["correct_samples"] > 0 and sampled["num_samples"] == 3 * sampled["samples_per_problem"]
    assert trained["steps"] == 2 and trained["samples_run"] == str(sample_dir)
    assert (train_dir / "model/model.safetensors").is_file()
    assert evaluated["num_problems"] == 2 and evaluated["model"] == "smollm2_135m"

    # Each stage was one SLURM job, submitted only once the job before it had returned its result.
    # (sacct's End comes a moment after the result file: SLURM records it when the job step is torn down.)
    jobs = {}
    for stage in ("sample", "train", "eval"):
        (folder,) = [f for name, f in job_folders(root).items() if f"/multirun/{stage}-" in str(f)]
        assert [a[0] for a in sacct_attempts(folder.name)] == ["COMPLETED"]
        result = folder / f"{folder.name}_0_result.pkl"
        jobs[stage] = (sacct_submitted(folder.name), int(result.stat().st_mtime))
    assert jobs["sample"][1] <= jobs["train"][0] and jobs["train"][1] <= jobs["eval"][0], jobs

    # One W&B group for the whole recipe run: every stage's offline run carries it.
    group = proc.stdout.split("++logger.group=", 1)[1].split()[0]
    assert group.startswith("slurm_chain-")
    wandb_runs = list(root.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 3 and all(group.encode() in f.read_bytes() for f in wandb_runs)


TRAINERS = ("cpu", "gpu", "ddp", "deepspeed_zero2", "deepspeed_zero3", "deepspeed_zero3_offload")


def test_every_trainer_config_trains_as_the_slurm_job_it_asks_for(slurm_cluster, outputs: Path) -> None:
    """One training job per trainer config, each asking SLURM for what its trainer runs: a single-device
    trainer (cpu, gpu) one task, a multi-process one (ddp, DeepSpeed ZeRO-2/3/offload) one task per GPU.
    This node has no GPU, so the site's ``tasks`` stands in for a GPU count of 2; Lightning checks its
    device count against SLURM's --ntasks-per-node and reads the ranks from SLURM, so every job trains
    one model over all of its tasks (the GPU configs fall back to the CPU, gloo)."""
    from tests.fake_runs import arith_split, write_sampling_run

    problems = arith_split("train")[:24]
    for trainer in TRAINERS:  # each job its own outputs root: a run folder does not depend on the trainer
        write_sampling_run(outputs / trainer, problems, dataset="arith", model="tiny_random")
    run_ok(
        outputs,
        "run_train.py",
        "-m",
        "pair=tiny",
        "regime=knowledge_distillation",
        "data.sampler=wc",
        f"trainer={','.join(TRAINERS)}",
        "paths.outputs=${oc.env:COMPUTE_OPTIMAL_OUTPUTS}/${hydra:runtime.choices.trainer}",
        f"hydra.sweep.dir={outputs}/hydra/multirun/trainers",
        "+site.resources.tasks=2",
        "train.max_steps=2",
        "logger=none",
        "progress=false",
        "hydra/launcher=submitit_slurm",
        timeout=1200,
    )
    folders = job_folders(outputs)
    assert len(folders) == len(TRAINERS)
    tasks = {}
    for job, folder in folders.items():
        array = job.split("_")[0]  # submitit keeps an array's script in the array's folder
        script = (folder.parent / array / f"{array}_submission.sh").read_text()
        states = [a[0] for a in sacct_attempts(job)]
        assert states == ["COMPLETED"], f"{job}: {states}\n" + "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(folder.glob("*_log.*"))
        )
        tasks[job] = int(script.split("#SBATCH --ntasks-per-node=")[1].split()[0])
    assert sorted(tasks.values()) == [1, 1, 2, 2, 2, 2]
    for trainer in TRAINERS:
        run_dir = (
            outputs / trainer / "train/arith/knowledge_distillation/tiny_random_student/wc-high-compute/seed0"
        )
        summary = json.loads((run_dir / "train_summary.json").read_text())
        processes = 1 if trainer in ("cpu", "gpu") else 2
        assert summary["steps"] == 2 and (run_dir / "model/model.safetensors").is_file()
        assert (summary["trainer"]["world_size"], summary["trainer"]["devices"]) == (processes, processes)
        if trainer.startswith("deepspeed"):
            assert summary["trainer"]["strategy_options"]["stage"] == (2 if trainer.endswith("2") else 3)
