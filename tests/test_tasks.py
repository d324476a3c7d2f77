import re

import pytest

from chatforge.config import make_config
from chatforge.errors import UserError
from chatforge.eval.chat import EXAMPLES, evaluate_chat
from chatforge.runs import open_run
from chatforge.tasks import TASKS, parse_mixture

CONFIG = make_config("micro")
SEEDS = range(20)


def user_prompts(examples: list[dict]) -> set[str]:
    return {m["content"] for ex in examples for m in ex["messages"] if m["role"] == "user"}


@pytest.mark.parametrize("name", TASKS)
def test_held_out_split_shares_no_prompt_with_training(name):
    task = TASKS[name]
    train = [ex for s in SEEDS for ex in task.examples("train", 100, s, CONFIG)]
    test = [ex for s in SEEDS for ex in task.examples("test", 100, s, CONFIG)]
    assert len(train) == len(test) == 100 * len(SEEDS)
    assert not user_prompts(train) & user_prompts(test)


def test_arithmetic_held_out_split_shares_no_operand_pair():
    def pairs(split: str) -> set[tuple[int, ...]]:
        examples = [ex for s in SEEDS for ex in TASKS["arithmetic"].examples(split, 100, s, CONFIG)]
        return {tuple(sorted(map(int, re.findall(r"\d+", p)))) for p in user_prompts(examples)}

    train, test = pairs("train"), pairs("test")
    assert len(test) > 100 and not train & test  # a pair is held out in either order


@pytest.mark.parametrize("name", TASKS)
def test_examples_are_seeded_and_their_reference_answers_score_1(name):
    task = TASKS[name]
    for split in ("train", "test"):
        examples = task.examples(split, 50, 3, CONFIG)
        assert examples == task.examples(split, 50, 3, CONFIG) != task.examples(split, 50, 4, CONFIG)
        assert all(task.score(ex, ex["messages"][-1]["content"]) == 1.0 for ex in examples)
    with pytest.raises(ValueError, match="split"):
        task.examples("validation", 1, 0, CONFIG)


@pytest.mark.parametrize("reply, score", [
    ("12 + 7 = 19.", 1.0),
    ("19", 1.0),
    ([{"type": "python", "text": "12 + 7"}, {"type": "output", "text": "19"}, {"type": "text", "text": "It is 19."}],
     1.0),
    ("12 + 7 = 18.", 0.0),  # a wrong last digit
    ("12 + 7 = 199.", 0.0),
    ("12 + 7 = 19, and 1 more is 20.", 0.0),  # the right number only in the middle
    ([{"type": "think", "text": "19"}, {"type": "text", "text": "About 20."}], 0.0),  # only in the reasoning
    ("I don't know.", 0.0),
    ("", 0.0),
])
def test_arithmetic_checker_reads_the_final_number(reply, score):
    assert TASKS["arithmetic"].score({"answer": 19}, reply) == score


def test_arithmetic_checker_signs_and_thousands():
    check = TASKS["arithmetic"].score
    assert check({"answer": -7}, "3 - 10 = -7.") == 1.0 and check({"answer": 7}, "3 - 10 = -7.") == 0.0
    assert check({"answer": 1024}, "2**10 is 1,024.") == 1.0


def test_identity_checker_looks_for_the_configured_name():
    config = make_config("micro")
    config.sft.identity = "Zorblax"
    ex = TASKS["identity"].examples("test", 1, 0, config)[0]
    assert ex["answer"] == "Zorblax" and "Zorblax" in ex["messages"][-1]["content"]
    check = TASKS["identity"].score
    assert check(ex, "I'm zorblax, an assistant.") == 1.0
    assert check(ex, "I am ChatGPT.") == 0.0
    assert check(ex, [{"type": "think", "text": "I am Zorblax"}, {"type": "text", "text": "I am a model."}]) == 0.0


def test_mixture_spec_parses():
    sources = parse_mixture(" identity:600, arithmetic:1200,data/chats.jsonl:0.5,")
    assert [(s.name, s.weight, s.is_file) for s in sources] == [
        ("identity", 600, False), ("arithmetic", 1200, False), ("data/chats.jsonl", 0.5, True)]


@pytest.mark.parametrize("spec, message", [
    ("identity", "'identity' needs a weight"),
    ("identity:lots", "'identity:lots': the weight 'lots' is not a number"),
    ("identity:0", "'identity:0': the weight must be a number > 0"),
    ("arithmetic:-5", "'arithmetic:-5': the weight must be"),
    ("arithmetic:nan", "'arithmetic:nan': the weight must be"),
    ("identity:2.5", "'identity:2.5': a task's weight is a number of conversations"),
    ("identity:1,poetry:3", "'poetry:3': unknown task 'poetry'"),
    ("identity:1,identity:2", "'identity:2': 'identity' is named twice"),
    (" , ", "names no task or file"),
])
def test_mixture_spec_rejects_bad_entries(spec, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_mixture(spec)


def test_evaluate_chat_scores_the_held_out_splits(micro_run):
    run = open_run(micro_run, save=False)
    result = evaluate_chat(run, "sft")
    assert result["stage"] == "sft" and set(result["tasks"]) == {"identity", "arithmetic"}
    for figures in result["tasks"].values():
        assert 0 <= figures["score"] <= 1 and figures["n"] == EXAMPLES
    assert {s["task"] for s in result["samples"]} == {"identity", "arithmetic"}
    for s in result["samples"]:
        assert isinstance(s["reply"], str) and s["score"] in (0.0, 1.0)
        assert s["prompt"] in user_prompts(TASKS[s["task"]].examples("test", EXAMPLES, run.config.sft.seed,
                                                                     run.config))
    with pytest.raises(UserError, match="no final checkpoint"):
        evaluate_chat(run, "final")
