"""python -m compute_optimal.prefetch: what a recipe needs from the Hub, fetched once before the jobs.

The Hub cannot be reached from this machine: the tests read plans (--dry-run), and where a real run
would download they replace the download call (huggingface_hub.snapshot_download, datasets.load_dataset)
with a recorder, to check what would be asked for.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import types
from pathlib import Path

import huggingface_hub
import pytest

from compute_optimal import prefetch
from tests.conftest import REPO_ROOT, SHARED_DATA

PAPER = str(REPO_ROOT / "sweeps" / "paper.yaml")
EMBEDDED = str(REPO_ROOT / "sweeps" / "embedded.yaml")
PRETRAINED = str(REPO_ROOT / "sweeps" / "pretrained.yaml")
PAPER_MODELS = {
    "gemma2_9b": "google/gemma-2-9b",
    "gemma2_27b": "google/gemma-2-27b",
    "gemma_7b": "google/gemma-7b",
}
# The paper's datasets: their local JSONL files (under COMPUTE_OPTIMAL_DATA), their Hub id and configuration.
PAPER_DATASETS = {
    "gsm8k": (("gsm8k/train.jsonl", "gsm8k/test.jsonl"), "openai/gsm8k (main)"),
    "math": (("math/train.jsonl", "math/test.jsonl"), "DigitalLearningGmbH/MATH-lighteval (default)"),
    "math500": (("math/math500_test.jsonl",), "HuggingFaceH4/MATH-500"),
}


def dry_run(capsys, *args: str) -> dict[tuple[str, str], str]:
    """{(kind, name): what the plan says} from the --dry-run output."""
    assert prefetch.main([*args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "nothing downloaded" in lines[-1] and "HF_HUB_OFFLINE=1" in lines[-1]
    return {tuple(line.split()[:2]): line.split(None, 2)[2] for line in lines[1:-1]}


def hub(plan: dict[tuple[str, str], str], kind: str) -> dict[str, str]:
    return {
        name: what.removeprefix("hub ")
        for (k, name), what in plan.items()
        if k == kind and what.startswith("hub ")
    }


def test_paper_plan_lists_the_gemma_models_and_the_datasets(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COMPUTE_OPTIMAL_DATA", str(SHARED_DATA))
    plan = dry_run(capsys, PAPER)
    assert hub(plan, "model") == PAPER_MODELS  # the pair (9B, 27B, the distillation student 7B)
    for name, (files, hub_id) in PAPER_DATASETS.items():
        local = all((SHARED_DATA / f).is_file() for f in files)
        expected = "local files present (" if local else f"hub {hub_id}"
        assert plan["dataset", name].startswith(expected), (name, plan["dataset", name])
    # Everything else the recipe touches ships with the project (the eval default's judge, arith).
    others = {what for (_, name), what in plan.items() if name not in {*PAPER_MODELS, *PAPER_DATASETS}}
    assert others and all(what.startswith("nothing to fetch") for what in others), others


def test_without_local_files_the_datasets_come_from_the_hub(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("COMPUTE_OPTIMAL_DATA", str(tmp_path))
    plan = dry_run(capsys, PAPER)
    assert hub(plan, "dataset") == {name: hub_id for name, (_, hub_id) in PAPER_DATASETS.items()}


@pytest.mark.parametrize(
    ("recipe", "models", "origin"),
    [
        (EMBEDDED, {"arith_student", "arith_wc", "arith_se"}, "trained"),
        (PRETRAINED, {"smollm2_135m", "gemma3_270m"}, "embedded"),
    ],
)
def test_laptop_studies_download_nothing(capsys, monkeypatch, recipe, models, origin) -> None:
    plan = dry_run(capsys, recipe)
    assert not hub(plan, "model") and not hub(plan, "dataset")
    assert {n for k, n in plan if k == "model"} == models
    assert {plan["model", m] for m in models} == {f"nothing to fetch ({origin})"}
    # A real run neither calls the Hub nor fails.
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("downloaded"))
    assert prefetch.main([recipe]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "nothing to fetch"


def test_overrides_change_the_plan(capsys) -> None:
    # Extra overrides replace the recipe's common ones (as compute_optimal.recipes merges them).
    plan = dry_run(capsys, PAPER, "pair=tiny")
    assert hub(plan, "model") == PAPER_MODELS  # all three are named by model= in the stages
    assert plan["model", "tiny_random_student"].startswith("nothing to fetch (random")
    plan = dry_run(capsys, PRETRAINED, "pair=gemma2")  # a pair every entry config takes (sampling too)
    assert hub(plan, "model") == PAPER_MODELS  # the pair's WC, SE and distillation student
    assert plan["model", "smollm2_135m"] == "nothing to fetch (embedded)"  # still sampled
    # An override that a stage's entry config does not have fails that stage, as the recipe itself would
    # (run_train.py composes no `model`): said in one line, nothing planned.
    assert prefetch.main([PRETRAINED, "model=gemma2_9b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: stage train") and "Could not override 'model'" in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((EMBEDDED, "model=gemma2_9bb"), "error: unknown model 'gemma2_9bb'"),
        ((EMBEDDED, "dataset=maths"), "error: unknown dataset 'maths'"),
        (("sweeps/no_such_recipe.yaml",), "error: cannot read recipe sweeps/no_such_recipe.yaml"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "compute_optimal.prefetch", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def local_data(root: Path) -> Path:
    for files, _ in PAPER_DATASETS.values():
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).touch()
    return root


def test_models_are_downloaded_as_safetensors_never_pickles(capsys, monkeypatch, tmp_path) -> None:
    """The Hub cannot be reached from here: snapshot_download, the one call that would download, is
    replaced by a recorder (every dataset has its local files, so no other download is attempted)."""
    monkeypatch.setenv("COMPUTE_OPTIMAL_DATA", str(local_data(tmp_path)))
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return f"/cache/{repo_id}"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert prefetch.main([PAPER]) == 0
    out = capsys.readouterr().out
    assert sorted(repo for repo, _ in calls) == sorted(PAPER_MODELS.values())  # each once
    for repo, kwargs in calls:
        patterns = kwargs["allow_patterns"]
        wanted = ["model-00001-of-00004.safetensors", "model.safetensors.index.json", "config.json"]
        wanted += ["generation_config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model"]
        assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in wanted), patterns
        pickles = ["pytorch_model.bin", "pytorch_model-00001-of-00004.bin", "original/consolidated.00.pth"]
        pickles += ["gemma-7b.gguf", "model.pt", "model.ckpt", "data.pkl"]
        assert not any(fnmatch.fnmatch(f, p) for f in pickles for p in patterns), patterns
        assert f"hub {repo} ... ok (/cache/{repo})" in out
    assert "HF_HUB_OFFLINE=1" in out.splitlines()[-1]


def test_datasets_without_local_files_are_loaded_from_the_hub(capsys, monkeypatch, tmp_path) -> None:
    """The Hub cannot be reached from here: datasets.load_dataset is replaced by a recorder (and
    snapshot_download too, for the models)."""
    monkeypatch.setenv("COMPUTE_OPTIMAL_DATA", str(tmp_path))
    loaded = []

    def load_dataset(hub_id, config=None):
        loaded.append((hub_id, config))
        return {"train": [{}] * 3}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: "/cache")
    assert prefetch.main([PAPER]) == 0
    assert sorted(loaded) == [
        ("DigitalLearningGmbH/MATH-lighteval", "default"),
        ("HuggingFaceH4/MATH-500", None),
        ("openai/gsm8k", "main"),
    ]
    assert "hub openai/gsm8k (main) ... ok (train 3 rows)" in capsys.readouterr().out


def test_a_gated_model_without_a_token_says_how_to_log_in(capsys, monkeypatch, tmp_path) -> None:
    """The Hub cannot be reached from here: snapshot_download is replaced by what it raises for a gated
    repository without a token."""
    from huggingface_hub.errors import GatedRepoError

    def gated(repo_id, **kwargs):
        response = types.SimpleNamespace(headers={}, status_code=401, request=None)
        raise GatedRepoError(f"401 Client Error. Cannot access gated repo {repo_id}", response=response)

    monkeypatch.setenv("COMPUTE_OPTIMAL_DATA", str(local_data(tmp_path)))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    assert prefetch.main([PAPER]) == 1
    captured = capsys.readouterr()
    failed = [line for line in captured.out.splitlines() if "failed:" in line]
    assert len(failed) == 3 and all(
        "is gated" in f and "hf auth login" in f and "HF_TOKEN" in f for f in failed
    )
    assert captured.err.strip() == "error: 3 of 3 not fetched; fix the above and run this again"
