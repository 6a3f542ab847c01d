"""Few-shot templates: exemplar counts, the frame a completion continues, stop sequences."""

from __future__ import annotations

import pytest

from compute_optimal.grading import extract_answer
from compute_optimal.prompts import PromptError, get_template


@pytest.mark.parametrize(("name", "shots"), [("gsm8k", 8), ("minerva_math", 4), ("arith", 4)])
def test_templates_have_the_paper_shot_counts(name: str, shots: int) -> None:
    template = get_template(name)
    assert len(template.exemplars) == shots
    prompt = template.render("What is 1 + 1?")
    assert prompt.count(template.question_prefix.strip()) == shots + 1
    assert prompt.endswith(template.answer_prefix)
    # No exemplar text contains a stop sequence: otherwise a model copying the style would stop early.
    for _question, answer in template.exemplars:
        assert not any(s in answer for s in template.stop), (name, answer)


@pytest.mark.parametrize(("name", "fmt"), [("gsm8k", "gsm8k"), ("minerva_math", "math"), ("arith", "arith")])
def test_exemplar_answers_are_extractable(name: str, fmt: str) -> None:
    # The style the model imitates must be one the grader reads.
    for _, answer in get_template(name).exemplars:
        assert extract_answer(answer, fmt) is not None, answer


def test_clip_cuts_at_the_first_stop_sequence() -> None:
    template = get_template("arith")
    text = " 3 + 4 = 7. The answer is 7.\n\nQuestion: Another one?\nAnswer: 9"
    assert template.clip(text) == " 3 + 4 = 7. The answer is 7."


def test_unknown_template_and_bad_shots() -> None:
    with pytest.raises(PromptError, match="unknown prompt template"):
        get_template("nope")
    with pytest.raises(PromptError, match="out of range"):
        get_template("minerva_math", 5)
    assert len(get_template("gsm8k", 2).exemplars) == 2
