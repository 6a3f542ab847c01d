"""Train a member of a model family from scratch, once per machine, into a cached checkpoint.

A family (``conf/family/<name>.yaml``) is one training recipe shared by its members: the same generated
problems, tokenizer, token budget, optimizer and seed; the members differ only in their ``arch``. Each
example is what sampling later asks of the model: the zero-shot prompt frame of the dataset's template,
then the reference solution, loss on the solution only (``training.sft_data``, the students' format).

The training problems come from the dataset's generator under their own seed, with every question of
the study's own splits (``conf/dataset/<data.dataset>.yaml``) removed, so the family never sees a
problem it is later sampled or evaluated on. Same recipe and arch -> the same weights (fixed seeds,
one ordered data stream); the checkpoint is written like the others (``models._atomic_build``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..data.problem import Problem
from ..errors import UserError

log = logging.getLogger(__name__)


class FamilyError(UserError, ValueError):
    """A family recipe that cannot be trained (unknown dataset, bad numbers)."""


# The datasets the project generates itself: a family can train on their problems (any number of them).
GENERATORS = {
    "compute_optimal.data.arith.generate_split": "compute_optimal.data.arith",
    "compute_optimal.data.arith_graph.generate_split": "compute_optimal.data.arith_graph",
}


def dataset_loader(name: str) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from ..resolvers import conf_dir

    path = conf_dir() / "dataset" / f"{name}.yaml"
    if not path.is_file():
        raise FamilyError(f"family data: unknown dataset {name!r} (no {path})")
    loader = OmegaConf.to_container(OmegaConf.load(path).loader, resolve=True)
    if loader.get("_target_") not in GENERATORS:
        raise FamilyError(
            f"family data: dataset {name!r} is not generated; a family trains on "
            f"{' or '.join(m.rsplit('.', 1)[1] for m in GENERATORS.values())} problems"
        )
    return loader


def generator(loader: Mapping[str, Any]) -> Any:
    """The module that generates a dataset (``generate_split``, ``SPLITS``, maybe ``VERSION``)."""
    import importlib

    return importlib.import_module(GENERATORS[str(loader["_target_"])])


def training_problems(data: Mapping[str, Any]) -> list[Problem]:
    """``data.num_problems`` generated problems (levels ``data.levels``, seed ``data.seed``), none of
    them a question of the study dataset's train or test split."""
    loader = dataset_loader(str(data["dataset"]))
    arith = generator(loader)
    held_out = {
        p.question
        for split in arith.SPLITS
        for p in arith.generate_split(
            split, num_train=loader["num_train"], num_test=loader["num_test"], levels=loader["levels"],
            seed=loader["seed"],
        )
    }  # fmt: skip
    if int(data["seed"]) == int(loader["seed"]):
        raise FamilyError(
            f"family data.seed must differ from dataset {data['dataset']}'s seed {loader['seed']}"
        )
    pool = arith.generate_split(
        "train",
        num_train=int(data["num_problems"]),
        num_test=0,
        levels=list(data["levels"]),
        seed=int(data["seed"]),
    )
    return [p for p in pool if p.question not in held_out]


def examples(problems: list[Problem], template: str) -> list[Any]:
    from ..prompts import get_template
    from ..training.sft_data import SFTExample

    frame = get_template(template, 0)
    return [SFTExample(p.id, frame.render(p.question), " " + p.solution) for p in problems]


def build_tokenizer(recipe: Mapping[str, Any], out: Path) -> None:
    from .tokenizer import train_tokenizer

    texts = [e.prompt + e.completion for e in examples(training_problems(recipe["data"]), recipe["template"])]
    train_tokenizer(texts, int(recipe["tokenizer"]["vocab_size"])).save_pretrained(out)


def _cpu_name() -> str:
    import platform

    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# recipe train.kernels: avx2 pins torch's CPU kernels to their AVX2 versions (ATen's dispatch, MKL's conditional
# numerical reproducibility, oneDNN's instruction set), so that any x86-64 CPU with AVX2 computes the same float
# sums in the same order: the same recipe, the same weights, also on a machine with AVX-512 (measured here: a
# member trained with ATen's AVX-512 kernels differs from one trained with its AVX2 kernels). They are read when
# torch loads, hence the child process. native (the default): whatever the machine offers.
PINNED_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
KERNELS = ("native", "avx2")


def kernels(recipe: Mapping[str, Any]) -> str:
    value = str(recipe["train"].get("kernels", "native"))
    if value not in KERNELS:
        raise FamilyError(f"family train.kernels must be one of {', '.join(KERNELS)}, got {value!r}")
    return value


def train_in_child(
    arch: Mapping[str, Any], recipe: Mapping[str, Any], tokenizer_dir: Path, out: Path, name: str
) -> dict[str, Any]:
    """:func:`train` in a child process with the recipe's kernels (pinned ones are read when torch loads, and
    the caller may have loaded it already); ``name``: the checkpoint's folder name, for the recorded hashes."""
    spec = {
        "arch": dict(arch),
        "recipe": dict(recipe),
        "tokenizer": str(tokenizer_dir),
        "out": str(out),
        "name": name,
    }
    env = {**os.environ, **(PINNED_KERNELS if kernels(recipe) == "avx2" else {})}
    proc = subprocess.run(
        [sys.executable, "-m", "compute_optimal.family.train_member", json.dumps(spec)], env=env
    )
    if proc.returncode != 0:
        raise FamilyError(
            f"training family member {name} failed (exit status {proc.returncode}; its log is above)"
        )
    return json.loads((out / "family.json").read_text())


def recorded_weights(path: Path | None = None) -> dict[str, str]:
    """Weight hashes recorded in the repository (``family/weights.json``): checkpoint folder -> sha256."""
    path = path or Path(__file__).with_name("weights.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def train(
    arch: Mapping[str, Any],
    recipe: Mapping[str, Any],
    tokenizer_dir: Path,
    out: Path,
    name: str | None = None,
) -> dict[str, Any]:
    """Train one member; write its checkpoint (safetensors, tokenizer, ``family.json``) to ``out``."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models import _arch_config
    from ..training.module import lr_lambda
    from ..training.sft_data import LengthBucketBatches, collate, tokenize

    opt = recipe["train"]
    # The thread count changes the order of float sums, hence the weights (measured: final loss 0.1022 with
    # 1 thread, 0.0953 with 2): the recipe fixes it, so equal recipes give equal models on any machine.
    torch.set_num_threads(int(opt["threads"]))
    torch.manual_seed(int(opt["seed"]))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = AutoModelForCausalLM.from_config(_arch_config(arch, tokenizer), dtype=torch.float32)
    items = tokenize(examples(training_problems(recipe["data"]), recipe["template"]), tokenizer, 1024)
    lengths = [len(x["input_ids"]) for x in items]
    batch_size = int(opt["batch_size"])
    steps = math.ceil(float(opt["tokens"]) / (batch_size * sum(lengths) / len(lengths)))
    warmup = int(float(opt["warmup"]) * steps)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=float(opt["lr"]), weight_decay=float(opt["weight_decay"]), betas=(0.9, 0.95)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_lambda(s, warmup_steps=warmup, max_steps=steps, schedule="cosine")
    )
    batches = LengthBucketBatches(lengths, batch_size, seed=int(opt["seed"]))
    model.train()
    seen, step, started, loss = 0, 0, time.monotonic(), float("nan")
    bar = tqdm(
        total=steps, desc=f"train {arch.get('hidden_size')}d x {arch.get('num_hidden_layers')}", unit="step"
    )
    while step < steps:
        for indices in batches:
            batch = collate([items[i] for i in indices], tokenizer.pad_token_id)
            out_ = model(**batch)
            out_.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            seen += int(batch["attention_mask"].sum())
            step += 1
            loss = out_.loss.item()
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}")
            if step >= steps:
                break
    bar.close()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    card = {
        "arch": dict(arch),
        "recipe": dict(recipe),
        "steps": steps,
        "tokens": seen,
        "examples": len(items),
        "final_loss": round(loss, 4),
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_non_embedding": sum(p.numel() for n, p in model.named_parameters() if "embed" not in n),
        "seconds": round(time.monotonic() - started, 1),
        # With native kernels equal recipes give equal weights on one kind of CPU, not across kinds (float sums in
        # another order; seen: final losses 0.0689 vs 0.100 for arith_se); train.kernels: avx2 pins them.
        "built_on": {"cpu": _cpu_name(), "torch": torch.__version__},
        "kernels": {
            "recipe": kernels(recipe),
            "aten": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in PINNED_KERNELS},
        },
    }
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    recorded = recorded_weights().get(name or "")
    card["weights_sha256"] = digest
    card["matches_recorded"] = None if recorded is None else digest == recorded
    if recorded is not None and digest != recorded:
        log.warning("%s: weights differ from the hash recorded in the repository (%s): this machine built "
                    "another model from the same recipe", name, recorded)  # fmt: skip
    (out / "family.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("trained %s: %s", out.name, card)
    return card
