import pytest

from chatforge.config import make_config
from chatforge.tasks import TASKS
from chatforge.tasks.chat import KINDS

CONFIG = make_config("tiny")
CHAT = TASKS["chat"]
MAX_TOKENS = 512  # the tiny preset's sft.max_len


def user_turns(examples: list[dict]) -> set[str]:
    return {m["content"] for ex in examples for m in ex["messages"] if m["role"] == "user"}


def render_bound(messages: list[dict]) -> int:
    """At least the rendered length under any byte-level BPE tokenizer: every token holds one byte or more,
    plus <|endoftext|> and each message's <|im_start|>, role, <|im_sep|> and <|im_end|>."""
    return 1 + sum(3 + len(m["role"]) + len(m["content"].encode()) for m in messages)


def test_every_kind_single_and_multi_turn_and_splits_disjoint():
    train = [ex for s in range(5) for ex in CHAT.examples("train", 200, s, CONFIG)]
    test = [ex for s in range(5) for ex in CHAT.examples("test", 200, s, CONFIG)]
    for examples in (train, test):
        assert {ex["kind"] for ex in examples} == set(KINDS)
        assert {len(ex["messages"]) for ex in examples} == {2, 4}  # alone, or after an earlier exchange
        assert max(render_bound(ex["messages"]) for ex in examples) <= MAX_TOKENS
    assert not user_turns(train) & user_turns(test)
    for key in ("topic", "word"):  # held-out tips and words are never trained
        assert not {ex[key] for ex in train if key in ex} & {ex[key] for ex in test if key in ex}


def test_seeded():
    assert CHAT.examples("test", 30, 1, CONFIG) == CHAT.examples("test", 30, 1, CONFIG) != \
        CHAT.examples("test", 30, 2, CONFIG)


@pytest.mark.parametrize("example, reply, score", [
    ({"kind": "greeting"}, "Hello! How can I help you today?", 1.0),
    ({"kind": "greeting"}, "Hi!", 1.0),
    ({"kind": "greeting"}, "I'm chatforge, a small language model.", 0.0),  # the identity sentence
    ({"kind": "greeting"}, "Hello! I'm chatforge.", 0.0),  # a greeting, but it names itself unasked
    ({"kind": "greeting"}, "This is a story about history.", 0.0),  # "hi" inside a word is no greeting
    ({"kind": "how"}, "I'm doing well, thanks!", 1.0),
    ({"kind": "how"}, "Hello! How can I help?", 0.0),
    ({"kind": "thanks"}, "You're welcome!", 1.0),
    ({"kind": "thanks"}, "Goodbye!", 0.0),
    ({"kind": "bye"}, "Bye! Take care.", 1.0),
    ({"kind": "bye"}, "You're welcome!", 0.0),
    ({"kind": "tip", "topic": "stress"}, "A simple stress tip: take slow, deep breaths.", 1.0),
    ({"kind": "tip", "topic": "stress"}, "A simple sleep tip: go to bed early.", 0.0),  # another topic
    ({"kind": "define", "word": "damp"}, "'damp' means slightly wet.", 1.0),
    ({"kind": "define", "word": "damp"}, "'tiny' means very small.", 0.0),
    ({"kind": "yesno", "yes_no": "no"}, "No, a car cannot swim.", 1.0),
    ({"kind": "yesno", "yes_no": "no"}, "Yes, a car can swim.", 0.0),
    ({"kind": "yesno", "yes_no": "yes"}, "Well, yes.", 0.0),  # the answer comes first
    ({"kind": "thanks"}, [{"type": "think", "text": "welcome"}, {"type": "text", "text": "Ok."}], 0.0),
])
def test_checker(example, reply, score):
    assert CHAT.score({**example, "name": "chatforge"}, reply) == score


def test_references_score_1_and_never_name_the_assistant():
    config = make_config("tiny")
    config.sft.identity = "Zorblax"
    for split in ("train", "test"):
        for ex in CHAT.examples(split, 300, 0, config):
            assert CHAT.score(ex, ex["messages"][-1]["content"]) == 1.0
            assert not any("zorblax" in m["content"].lower() for m in ex["messages"])
            assert CHAT.metrics(ex, ex["messages"][-1]["content"]) == {"chat_acc": 1.0}
