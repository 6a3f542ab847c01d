"""The evaluation stage (run_eval.py task=evaluate): test accuracy of a base model or a fine-tuned student.

config -> the target (``model=``, or the training run ``task.student`` selects) -> a greedy and a sampled
generation run (sampling plans) -> one engine for both -> ``eval_summary.json`` (``runs.EvalRun``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from ..data import select_subset
from ..evaluation import EvalTarget, plan_runs, run_evaluation, student_target
from ..specs import Dataset, Model
from .common import (
    StageResult,
    engine_for,
    eval_run,
    load_split,
    log_to_wandb,
    model_named,
    student_name,
    student_train_run,
)


def target(cfg: DictConfig, dataset: Dataset) -> tuple[EvalTarget, Dataset]:
    """What is evaluated, and the dataset with the prompt it is evaluated with: a student is prompted
    as it was trained (``train.num_shots``), a base model with the dataset's few-shot prompt."""
    task = cfg.task
    if task.student.regime:
        trained = student_train_run(cfg)
        student = model_named(cfg, task.student.model or student_name(task.student.regime, cfg.pair))
        evaluated = student_target(trained, task.student.train_dataset, student)
        trained_shots = trained.signature()["hparams"].get("num_shots", 0)
        return evaluated, dataset.with_prompt(trained_shots if task.num_shots is None else task.num_shots)
    model = Model.from_config(cfg.model)
    shots = dataset.prompt.num_shots if task.num_shots is None else task.num_shots
    return EvalTarget("base", f"base/{model.name}", model), dataset.with_prompt(shots)


def run(cfg: DictConfig) -> StageResult:
    task = cfg.task
    evaluated, dataset = target(cfg, Dataset.from_config(cfg.dataset))
    run_folder = eval_run(cfg)
    problems = select_subset(load_split(cfg.dataset, task.split), task.limit, cfg.seed)
    plans = plan_runs(
        run=run_folder,
        model=evaluated.model,
        dataset=dataset,
        problems=problems,
        num_samples=task.num_samples,
        temperature=task.temperature,
        max_new_tokens=task.max_new_tokens,
        chunk_size=task.chunk_size,
        seed=cfg.seed,
        trained=evaluated.trained,
    )
    with engine_for(evaluated.model, cfg.engine, cfg.seed) as engine:
        summary = run_evaluation(
            run_folder, evaluated, plans, engine, ks=list(task.ks), progress=cfg.progress
        )
    name = f"eval-{dataset.name}-{evaluated.name.replace('/', '-')}"
    log_to_wandb(cfg, name=name, job_type="evaluate", summary=summary)
    n = summary.get("samples_per_problem")
    sampled = f", mean@{n} {summary[f'mean@{n}']:.3f}, maj@{n} {summary[f'maj@{n}']:.3f}" if n else ""
    message = (
        f"{evaluated.name} on {dataset.name} test ({summary['num_problems']} problems): "
        f"pass@1 greedy {summary.get('pass@1_greedy', float('nan')):.3f}{sampled} -> {run_folder.path}"
    )
    return StageResult({**summary, "run_dir": str(run_folder.path)}, message)
