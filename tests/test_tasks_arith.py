import re

import pytest
import regex

from chatforge.config import make_config
from chatforge.infer.tools import run_python
from chatforge.tasks import TASKS
from chatforge.tasks.arithmetic import BARE, NAMES, NO_TOOLS, OBJECTS, WORDS, column_steps, pair_split
from chatforge.tasks.common import last_number
from chatforge.tokenizer.bpe import SPLIT_PATTERN, train_tokenizer
from chatforge.tokenizer.chat import render

CONFIG = make_config("micro")
STEP_TASKS = ("arith_think", "arith_answer")


def operands(prompt: str) -> tuple[int, ...]:
    return tuple(sorted(int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*\d|\d", prompt)))


def examples(task: str, split: str, n: int = 400, seed: int = 0) -> list[dict]:
    return TASKS[task].examples(split, n, seed, CONFIG)


def test_splits_have_their_own_templates_people_and_objects():
    for table in (BARE, WORDS, NAMES, OBJECTS):
        for a, b in (("train", "test"), ("train", "practice"), ("practice", "test")):
            assert not set(table[a]) & set(table[b])


def test_rl_practises_on_new_phrasings_of_training_pairs():
    assert TASKS["arithmetic"].rl_split == "practice"
    practice = examples("arithmetic", "practice", 1000)
    pairs = {operands(ex["messages"][-2]["content"]) for ex in practice}
    assert all(pair_split(*pair) == "train" for pair in pairs)
    train_prompts = {ex["messages"][-2]["content"] for s in range(3) for ex in examples("arithmetic", "train", seed=s)}
    assert not {ex["messages"][-2]["content"] for ex in practice} & train_prompts


@pytest.mark.parametrize("task", ["arithmetic", *STEP_TASKS])
def test_splits_share_no_operand_pair(task):
    train = {operands(ex["messages"][-2]["content"]) for s in range(5) for ex in examples(task, "train", seed=s)}
    test = {operands(ex["messages"][-2]["content"]) for s in range(5) for ex in examples(task, "test", seed=s)}
    assert len(test) > 100 and not train & test
    assert all(pair_split(*pair) == "test" for pair in test)


def test_calculator_problems_vary_in_size_form_and_operator():
    prompts = [ex["messages"][-2]["content"] for ex in examples("arithmetic", "train", 1000)]
    sizes = {len(str(n)) for p in prompts for n in operands(p)}
    assert sizes == {1, 2, 3, 4}
    assert any("," in p for p in prompts) and any(re.search(r"\d{4}", p) for p in prompts)
    for op in ("+", "-", "−", "*", "×", " x ", "plus", "minus", "times"):
        assert any(op in p for p in prompts), op
    assert sum(p.endswith("?") and len(p) > 60 for p in prompts) > 200  # word problems


def test_reference_calls_copy_the_operands_token_for_token_and_compute_the_stated_result():
    split = regex.compile(SPLIT_PATTERN)
    for ex in examples("arithmetic", "train", 300):
        if ex.get("tools") is False:  # told that tools are off: the columns worked out where they can be
            assert ex["messages"][0] == {"role": "system", "content": NO_TOOLS}
            *think, text = ex["messages"][-1]["content"]
            assert last_number(text["text"]) == ex["answer"]
            if think:
                assert think[0]["type"] == "think" and last_result(think[0]["text"]) == ex["answer"]
            continue
        q = ex["messages"][-2]["content"]
        call, output, text = ex["messages"][-1]["content"]
        assert [p for p in split.findall(q) if p.isdigit()] == [p for p in split.findall(call["text"]) if p.isdigit()]
        assert run_python(call["text"]) == output["text"]
        assert output["text"] in text["text"]
        if "," in output["text"]:  # the result is written as the question writes numbers
            assert "," in q


def test_held_out_problems_come_with_and_without_the_tool():
    test = examples("arithmetic", "test", 100)
    for with_tool, without in zip(test[::2], test[1::2], strict=True):
        assert with_tool["metric"] == "arith_tool_acc" and "tools" not in with_tool
        assert without["metric"] == "arith_notool_acc" and without["tools"] is False
        assert without["messages"][1:-1] == with_tool["messages"][:-1] and without["answer"] == with_tool["answer"]
    train = examples("arithmetic", "train", 800)
    assert 50 < sum(ex.get("tools") is False for ex in train) < 150


@pytest.mark.parametrize("task", ["arithmetic", *STEP_TASKS])
def test_examples_are_seeded_and_references_score_1(task):
    for split in ("train", "test"):
        exs = examples(task, split, 60, seed=3)
        assert exs == examples(task, split, 60, seed=3) != examples(task, split, 60, seed=4)
        assert all(TASKS[task].score(ex, ex["messages"][-1]["content"]) == 1.0 for ex in exs)


def calc(text: str, call: str = "1_284 - 397", output: str = "887") -> list[dict]:
    return [{"type": "python", "text": call}, {"type": "output", "text": output}, {"type": "text", "text": text}]


@pytest.mark.parametrize("reply, score, copy", [
    (calc("1,284 - 397 = 887."), 1.0, 1.0),
    (calc("It is 887.", call="1284 - 397"), 1.0, 0.0),  # right result, operands not as the question wrote them
    (calc("It is 888."), 0.0, 1.0),
    (calc("1,284 - 397 = 886.", output="887"), 0.0, 1.0),  # the tool's output is not the answer
    (calc("", call="1_248 - 397", output="851"), 0.0, 0.0),
    ("1,284 - 397 = 887.", 1.0, 0.0),  # no call
    ([{"type": "think", "text": "887"}, {"type": "text", "text": "About 900."}], 0.0, 0.0),
])
def test_calculator_checker_and_copy_accuracy(reply, score, copy):
    example = {"answer": 887, "call": "1_284 - 397", "metric": "arith_tool_acc"}
    assert TASKS["arithmetic"].metrics(example, reply) == {"arith_tool_acc": score, "arith_copy_acc": copy}
    without = {"answer": 887, "tools": False, "metric": "arith_notool_acc"}
    assert TASKS["arithmetic"].metrics(without, reply) == {"arith_notool_acc": score}


@pytest.mark.parametrize("op, a, b", [("+", 47, 38), ("+", 99, 99), ("+", 10, 10), ("-", 83, 47), ("-", 90, 9),
                                      ("-", 53, 47), ("*", 47, 6), ("*", 99, 9), ("*", 10, 0)])
def test_column_steps_end_in_the_result(op, a, b):
    steps = column_steps(op, a, b)
    assert last_result(steps) == {"+": a + b, "-": a - b, "*": a * b}[op]


def last_result(steps: str) -> int:
    return int(re.findall(r"= (\d+)\.$", steps)[0])


def test_think_first_and_answer_first_share_problems_and_answer_sentence():
    think, answer = examples("arith_think", "train", 200), examples("arith_answer", "train", 200)
    for t, a in zip(think, answer, strict=True):
        assert t["messages"][:-1] == a["messages"][:-1] and t["answer"] == a["answer"]
        assert t["messages"][0] == {"role": "system", "content": NO_TOOLS}  # told, or it calls python there
        (steps, t_text), (a_text,) = t["messages"][-1]["content"], a["messages"][-1]["content"]
        assert steps["type"] == "think" and t_text == a_text and last_result(steps["text"]) == t["answer"]
        assert t["metric"] == "think_first_acc" and a["metric"] == "answer_first_acc"
    assert TASKS["arith_think"].score(think[0], [{"type": "think", "text": str(think[0]["answer"])}]) == 0.0


def test_conversations_render_within_512_tokens():
    """A 300-token vocabulary is close to bytes: every larger vocabulary of the same split makes fewer tokens."""
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][-1]["text"]
             for task in ("arithmetic", *STEP_TASKS) for ex in examples(task, "test", 50) for m in ex["messages"]]
    tok = train_tokenizer(texts * 3, 300)
    for task in ("arithmetic", *STEP_TASKS):
        for split in ("train", "test"):
            assert max(len(render(tok, ex["messages"])[0]) for ex in examples(task, split, 300)) <= 512
