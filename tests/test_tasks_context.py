import pytest

from chatforge.config import make_config
from chatforge.tasks import TASKS
from chatforge.tasks.context import CITIES, FIRST, ITEMS, JOBS, LAST, PRICES, TIMES, YEARS, contains
from tests.test_tasks_chat import MAX_TOKENS, render_bound, user_turns

CONFIG = make_config("tiny")
CONTEXT = TASKS["context"]
PROMPT_BYTES = 300  # a document and its question: about 100 tokens of tiny's vocabulary, so seq_len 256 holds them


def test_value_pools_disjoint_by_split():
    for pool in (FIRST, LAST, CITIES, TIMES, PRICES, YEARS, JOBS, ITEMS):
        assert pool["train"] and pool["test"] and not set(pool["train"]) & set(pool["test"])


def test_examples_seeded_short_and_disjoint():
    train = [ex for s in range(5) for ex in CONTEXT.examples("train", 200, s, CONFIG)]
    test = [ex for s in range(5) for ex in CONTEXT.examples("test", 200, s, CONFIG)]
    assert not user_turns(train) & user_turns(test)
    assert {ex["answer"] for ex in test} - {ex["answer"] for ex in train}  # held-out values are new to the model
    for examples in (train, test):
        assert max(render_bound(ex["messages"]) for ex in examples) <= MAX_TOKENS
        assert max(len(ex["messages"][0]["content"].encode()) for ex in examples) <= PROMPT_BYTES
    assert CONTEXT.examples("test", 30, 1, CONFIG) == CONTEXT.examples("test", 30, 1, CONFIG) != \
        CONTEXT.examples("test", 30, 2, CONFIG)


def test_the_answer_is_copied_from_the_document_beside_distractors():
    for split in ("train", "test"):
        examples = CONTEXT.examples(split, 300, 0, CONFIG)
        assert sum(bool(ex["others"]) for ex in examples) > 0.7 * len(examples)
        for ex in examples:
            prompt, reply = ex["messages"][0]["content"], ex["messages"][-1]["content"]
            assert contains(prompt, ex["answer"]) and all(contains(prompt, o) for o in ex["others"])
            assert ex["answer"] not in ex["others"]
            assert CONTEXT.score(ex, reply) == 1.0 and CONTEXT.metrics(ex, reply) == {"context_acc": 1.0}


@pytest.mark.parametrize("reply, score", [
    ("The design review is at 14:05.", 1.0),
    ("14:05", 1.0),
    ("the DESIGN review is at   14:05", 1.0),
    ("The design review is at 09:30.", 0.0),  # the other time in the document
    ("It is at 14:05 or 09:30.", 0.0),  # both
    ("It is at 14:0.", 0.0),
    ("It is at 4:05.", 0.0),
    ([{"type": "think", "text": "14:05"}, {"type": "text", "text": "At 09:30."}], 0.0),
])
def test_checker_times(reply, score):
    assert CONTEXT.score({"answer": "14:05", "others": ["09:30"]}, reply) == score


@pytest.mark.parametrize("reply, score", [
    ("The tea cost $5.50.", 1.0),
    ("The tea cost $15.50.", 0.0),
    ("The tea cost $5.5.", 0.0),
    ("The tea cost $5.50, the total $25.50.", 0.0),
])
def test_checker_prices(reply, score):
    assert CONTEXT.score({"answer": "$5.50", "others": ["$25.50"]}, reply) == score


def test_contains_whole_spans_only():
    assert contains("Platform 5.", "5") and not contains("Platform 15.", "5") and not contains("$5.50", "5")
    assert contains("Alice Smith leads", "alice  smith") and not contains("Alicea Smith", "Alice Smith")
