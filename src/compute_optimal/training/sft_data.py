"""Supervised fine-tuning data: correct samples -> (prompt, solution) token sequences.

Only samples whose final answer the grader accepted are kept. Each example is the prompt frame the
sample was drawn with (``num_shots`` exemplars; 0 by default: question -> solution, so training
compute goes to the solution rather than to the same exemplars in every example) followed by the
solution; the loss covers the solution tokens only. Batches group examples of similar length so
padding wastes little compute; the share of real tokens per batch is reported.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

IGNORE_INDEX = -100  # label value the loss ignores (prompt tokens, padding)


@dataclass(frozen=True)
class SFTExample:
    problem_id: str
    prompt: str
    completion: str


@dataclass(frozen=True)
class SelectionStats:
    correct_samples: int
    after_dedup: int
    after_cap: int
    problems: int


def normalize_for_dedup(text: str) -> str:
    """Whitespace-insensitive, case-insensitive form used to drop duplicate solutions of a problem."""
    return re.sub(r"\s+", " ", text).strip().lower()


def select_examples(
    samples: pd.DataFrame,
    questions: dict[str, str],
    render_prompt: Any,
    *,
    dedup: bool = True,
    max_per_problem: int | None = None,
    seed: int = 0,
) -> tuple[list[SFTExample], SelectionStats]:
    """Correct samples -> SFT examples, with optional per-problem de-duplication and cap (seeded)."""
    correct = samples[samples["correct"]].sort_values(["problem_id", "sample_index"])
    rng = random.Random(seed)
    examples: list[SFTExample] = []
    n_dedup = 0
    for problem_id, group in correct.groupby("problem_id", sort=True):
        texts = [t.strip() for t in group["completion"]]
        if dedup:
            seen: dict[str, str] = {}
            for t in texts:
                seen.setdefault(normalize_for_dedup(t), t)
            texts = list(seen.values())
        n_dedup += len(texts)
        if max_per_problem is not None and len(texts) > max_per_problem:
            texts = rng.sample(texts, max_per_problem)
        if problem_id not in questions:
            raise KeyError(
                f"sample of unknown problem {problem_id!r}: the dataset does not match the samples"
            )
        prompt = render_prompt(questions[problem_id])
        examples.extend(SFTExample(str(problem_id), prompt, " " + t) for t in texts)
    stats = SelectionStats(len(correct), n_dedup, len(examples), correct["problem_id"].nunique())
    return examples, stats


def keep_process_correct(samples: pd.DataFrame, problems: Sequence[Any]) -> pd.DataFrame:
    """``samples`` with ``correct`` narrowed to the samples the exact process check passes (the right answer
    by a valid chain; an unknown verdict is not kept): the process-correct-only control of the study."""
    from ..judge import CORRECT
    from ..process_check import sample_verdicts

    verdicts = sample_verdicts(samples, {p.id: p for p in problems})
    ok = verdicts[verdicts["verdict"] == CORRECT]
    good = set(zip(ok["problem_id"], ok["sample_index"], strict=True))
    passed = [
        (str(p), int(i)) in good for p, i in zip(samples["problem_id"], samples["sample_index"], strict=True)
    ]
    return samples.assign(correct=samples["correct"].astype(bool) & pd.Series(passed, index=samples.index))


def tokenize(examples: Sequence[SFTExample], tokenizer: Any, max_length: int) -> list[dict[str, list[int]]]:
    """Token ids and labels (prompt tokens masked); examples longer than max_length are left-truncated
    in the prompt, never in the solution, so the loss always sees whole solutions. A leading BOS token
    survives the truncation: BOS-sensitive models (Gemma) degrade without it."""
    eos = tokenizer.eos_token_id
    out = []
    for ex in examples:
        prompt_ids = tokenizer(ex.prompt, add_special_tokens=True).input_ids
        target_ids = tokenizer(ex.completion, add_special_tokens=False).input_ids + (
            [eos] if eos is not None else []
        )
        bos = prompt_ids[:1] if prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else []
        target_ids = target_ids[: max_length - len(bos)]
        keep = max(0, max_length - len(target_ids) - len(bos))
        prompt_ids = bos + (prompt_ids[len(bos) :][-keep:] if keep else [])
        out.append(
            {"input_ids": prompt_ids + target_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + target_ids}
        )
    return out


class LengthBucketBatches(torch.utils.data.Sampler):
    """Batches of similar-length examples, in a seeded random order that changes every epoch.

    With several processes (DDP, DeepSpeed) each rank takes every ``world_size``-th batch, and all
    ranks get the same number of batches, so no rank waits for another at the end of an epoch.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int = 0,
        bucket_factor: int = 8,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = batch_size * bucket_factor
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip = 0

    def resume_after(self, batches: int) -> None:
        """Continue after this rank's first ``batches`` batches (a resumed run): the order an
        uninterrupted run takes, no batch seen twice or left out."""
        self.epoch, self._skip = divmod(batches, len(self))

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(f"{self.seed}:{self.epoch}")
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for i in range(0, len(order), self.bucket):
            chunk = sorted(order[i : i + self.bucket], key=lambda j: self.lengths[j])
            batches += [chunk[k : k + self.batch_size] for k in range(0, len(chunk), self.batch_size)]
        rng.shuffle(batches)
        while len(batches) < self.world_size:  # tiny data sets: every rank still gets a batch
            batches += batches
        usable = len(batches) - len(batches) % self.world_size
        mine = batches[self.rank : usable : self.world_size][self._skip :]
        self._skip = 0
        return iter(mine)

    def __len__(self) -> int:
        batches = (len(self.lengths) + self.batch_size - 1) // self.batch_size
        return max(1, batches // self.world_size)


def collate(batch: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of the batch; report real tokens for the padding statistic."""
    width = max(len(x["input_ids"]) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        n = len(x["input_ids"])
        ids[i, :n] = torch.tensor(x["input_ids"])
        labels[i, :n] = torch.tensor(x["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class SFTDataset(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, list[int]]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.items[i]
