import re

from chatforge.config import make_config
from chatforge.infer.tools import run_python
from chatforge.tasks import TASKS
from chatforge.tasks.countdown import LOW, MISSES, TEMPLATES, evaluate, number_split

CONFIG = make_config("micro")
COUNTDOWN = TASKS["countdown"]


def number_sets(split: str, seeds: int = 3) -> set[tuple[int, ...]]:
    return {tuple(ex["numbers"]) for s in range(seeds) for ex in COUNTDOWN.examples(split, 300, s, CONFIG)}


def test_splits_have_their_own_number_sets_and_phrasings():
    train, test, practice = number_sets("train"), number_sets("test"), number_sets("practice")
    assert len(test) > 200 and not train & test
    assert all(number_split(s) == "test" for s in test) and all(number_split(s) == "train" for s in practice)
    for a, b in (("train", "test"), ("train", "practice"), ("practice", "test")):
        assert not set(TEMPLATES[a]) & set(TEMPLATES[b])
    prompts = {split: {ex["messages"][0]["content"] for ex in COUNTDOWN.examples(split, n, 0, CONFIG)}
               for split, n in (("train", 900), ("practice", 300))}
    assert not prompts["practice"] & prompts["train"]
    for split in ("train", "practice"):  # many wordings, so RL cannot key on a few (the module's figures)
        assert len({re.sub(r"\d+", "#", q) for q in prompts[split]}) > 100


def test_references_compute_their_outputs_in_the_tool_and_score_1():
    for split in ("train", "test", "practice"):
        exs = COUNTDOWN.examples(split, 200, 1, CONFIG)
        assert exs == COUNTDOWN.examples(split, 200, 1, CONFIG)
        for ex in exs:
            parts = ex["messages"][-1]["content"]
            assert COUNTDOWN.score(ex, parts) == 1.0
            assert str(ex["answer"]) in ex["messages"][0]["content"]
            assert all(LOW <= n for n in ex["numbers"]) and ex["answer"] not in ex["numbers"]
            for call, output in zip(parts[::3], parts[1::3], strict=True):
                assert call["type"] == "python" and run_python(call["text"]) == output["text"]
        retries = [ex for ex in exs if len(ex["messages"][-1]["content"]) > 3]
        assert (len(retries) > 30) == (split == "train")  # answers miss first in training only
        for ex in retries:
            outputs = [p["text"] for p in ex["messages"][-1]["content"][1::3]]
            assert outputs[-1] == str(ex["answer"]) and str(ex["answer"]) not in outputs[:-1]
            assert len(set(outputs)) == len(outputs) <= 1 + max(MISSES)  # each miss a value of its own


def test_any_right_expression_counts_and_nothing_else_does():
    ex = {"numbers": [3, 5, 8], "answer": 23}
    for right in ("3 * 5 + 8 = 23.", "So 8 + 5 × 3 = 23", "First 3 + 5 = 8, then (8) ... 8 + 3 * 5 = 23."):
        assert COUNTDOWN.score(ex, right) == 1.0, right
    wrong = ["3 * 5 + 8 = 24.", "3 * 5 + 8 + 0 = 23.", "3 * 5 + 5 + 3 = 23.", "5 * 5 - 2 = 23.", "The answer is 23.",
             "8 + 5 * 3 = 23. Or 3 * 5 = 15."]  # the last expression stated is the answer
    for reply in wrong:
        assert COUNTDOWN.score(ex, reply) == 0.0, reply
    # the tool's output is not the answer: only the reply's own text is read
    parts = [{"type": "python", "text": "3 * 5 + 8"}, {"type": "output", "text": "3 * 5 + 8 = 23"},
             {"type": "text", "text": "Done."}]
    assert COUNTDOWN.score(ex, parts) == 0.0
    assert COUNTDOWN.metrics(ex, parts) == {"countdown_acc": 0.0, "countdown_retry_rate": 0.0}


def test_evaluate_takes_integer_arithmetic_only():
    assert evaluate("(2 + 3) × 4 - 1") == 19
    for bad in ("__import__('os')", "2 ** 10", "7 / 2", "1.5 * 2", "len('ab')", "2 +"):
        assert evaluate(bad) is None, bad
