import pytest

from chatforge.config import make_config
from chatforge.tasks import TASKS
from chatforge.tasks.identity import ask
from tests.test_tasks_chat import MAX_TOKENS, render_bound, user_turns

IDENTITY = TASKS["identity"]


@pytest.fixture(scope="module")
def config():
    config = make_config("tiny")
    s = config.sft
    s.identity, s.creator, s.trained_on = "Zorblax", "Acme Labs", "old cookbooks"
    s.can_do, s.cannot_do = "write recipes", "taste food"
    return config


def examples(split: str, config, seeds=range(4), n=200) -> list[dict]:
    return [ex for s in seeds for ex in IDENTITY.examples(split, n, s, config)]


def system_prompt(ex: dict) -> str:
    return ex["messages"][0]["content"] if ex["messages"][0]["role"] == "system" else ""


def test_kinds_of_conversation(config):
    for split in ("train", "test"):
        exs = examples(split, config)
        asked = [ex for ex in exs if ex.get("metric") != "identity_false_rate"]
        others = [ex for ex in exs if ex.get("metric") == "identity_false_rate"]
        assert 0.2 < len(others) / len(exs) < 0.3
        assert len({ex["messages"][-2]["content"] for ex in asked}) >= (200 if split == "train" else 100)
        # every config field is stated, some under another persona, some as the second question, some with a
        # system prompt that leaves the name as it is
        assert {ex["answer"] for ex in asked} >= {"Zorblax", "Acme Labs", "old cookbooks", "write recipes",
                                                  "taste food"}
        personas = [ex for ex in asked if ex["metric"] == "persona_acc"]
        assert personas and all(ex["answer"] in system_prompt(ex) and ex["avoid"] == "Zorblax" for ex in personas)
        assert any(len(ex["messages"]) - bool(system_prompt(ex)) == 4 for ex in asked)
        assert any(system_prompt(ex) and ex["answer"] == "Zorblax" for ex in asked)
        assert max(render_bound(ex["messages"]) for ex in exs) <= MAX_TOKENS
        assert all(IDENTITY.score(ex, ex["messages"][-1]["content"]) == 1.0 for ex in exs)
        assert not any("zorblax" in ex["messages"][-1]["content"].lower() for ex in personas + others)


def test_splits_disjoint_and_seeded(config):
    train, test = examples("train", config), examples("test", config)
    assert not user_turns(train) & user_turns(test)
    assert not {system_prompt(ex) for ex in train} & {system_prompt(ex) for ex in test} - {""}
    assert IDENTITY.examples("test", 40, 1, config) == IDENTITY.examples("test", 40, 1, config) != \
        IDENTITY.examples("test", 40, 2, config)


def test_checker_and_metrics(config):
    exs = IDENTITY.examples("test", 200, 0, config)
    who = next(ex for ex in exs if ex["answer"] == "Zorblax")
    persona = next(ex for ex in exs if ex["metric"] == "persona_acc")
    other = next(ex for ex in exs if ex.get("metric") == "identity_false_rate")
    p = persona["answer"]
    assert IDENTITY.metrics(who, "I'm zorblax.") == {"identity_acc": 1.0}
    assert IDENTITY.metrics(who, "I'm ChatGPT.") == {"identity_acc": 0.0}
    assert IDENTITY.metrics(persona, f"I'm {p}, your guide.") == {"persona_acc": 1.0}
    assert IDENTITY.score(persona, "I'm Zorblax, a small language model.") == 0.0  # the persona is ignored
    assert IDENTITY.score(persona, f"I'm {p}, also called Zorblax.") == 0.0
    assert IDENTITY.metrics(other, "You're welcome!") == {"identity_false_rate": 0.0}
    assert IDENTITY.metrics(other, "I'm Zorblax, an AI made by Acme Labs.") == {"identity_false_rate": 1.0}
    assert IDENTITY.score(other, "I'm Zorblax.") == 0.0  # the right call scores 1, as a reward must
    assert IDENTITY.score(who, [{"type": "think", "text": "Zorblax"}, {"type": "text", "text": "I'm a bot."}]) == 0.0


@pytest.mark.parametrize("opener, question, asked", [
    ("", "Who are you?", "Who are you?"),
    ("Hi! ", "Who are you?", "Hi! Who are you?"),
    ("Hey, ", "Who are you?", "Hey, who are you?"),
    ("Quick question: ", "What can you do?", "Quick question: what can you do?"),
])
def test_ask(opener, question, asked):
    assert ask(opener, question) == asked
