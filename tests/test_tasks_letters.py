import pytest
import regex

from chatforge.config import make_config
from chatforge.infer.tools import run_python
from chatforge.tasks import TASKS
from chatforge.tasks.letters import SPLIT_WORDS, TEMPLATES, WORDS
from chatforge.tokenizer.bpe import SPLIT_PATTERN, train_tokenizer
from chatforge.tokenizer.chat import render

CONFIG = make_config("micro")
LETTERS = TASKS["letters"]


def test_splits_have_their_own_words_and_phrasings():
    assert not set(SPLIT_WORDS["train"]) & set(SPLIT_WORDS["test"])
    assert len(SPLIT_WORDS["test"]) >= 50 and sorted(SPLIT_WORDS["train"] + SPLIT_WORDS["test"]) == WORDS
    for kind in TEMPLATES["train"]:
        assert not set(TEMPLATES["train"][kind]) & set(TEMPLATES["test"][kind])
    for split in ("train", "test"):
        words = {ex["word"] for s in range(3) for ex in LETTERS.examples(split, 300, s, CONFIG)}
        assert words <= set(SPLIT_WORDS[split]) and len(words) > 40


def test_examples_are_seeded_and_references_score_1():
    for split in ("train", "test"):
        exs = LETTERS.examples(split, 100, 3, CONFIG)
        assert exs == LETTERS.examples(split, 100, 3, CONFIG) != LETTERS.examples(split, 100, 4, CONFIG)
        for ex in exs:
            assert LETTERS.metrics(ex, ex["messages"][-1]["content"]) == {"letters_tool_acc": 1.0,
                                                                           "letters_copy_acc": 1.0}
    kinds = {ex["call"].split("\n")[1][:7] for ex in LETTERS.examples("train", 100, 0, CONFIG)}
    assert kinds == {"w.count", '"-".joi', "w.strip"}
    assert any(ex["answer"] == 0 for ex in LETTERS.examples("train", 100, 0, CONFIG))


def test_the_call_holds_the_word_with_the_tokens_of_the_question_and_computes_the_answer():
    """Pieces of the split regex: a BPE of any vocabulary encodes equal pieces to equal tokens."""
    split = regex.compile(SPLIT_PATTERN)
    quotes = set()
    for ex in LETTERS.examples("train", 300, 0, CONFIG):
        word, q = ex["word"], ex["messages"][0]["content"]
        call, output, _ = ex["messages"][-1]["content"]
        in_question = {p for p in split.findall(q) if p.strip(" '\"") == word}
        assert in_question and in_question == {p for p in split.findall(call["text"]) if p.strip(" '\"") == word}
        assert run_python(call["text"]) == output["text"] == str(ex["answer"])
        quotes.add(q[q.index(word) - 1])
    assert quotes == {" ", "'", '"'}


@pytest.mark.parametrize("reply, score", [
    ("The letter r appears 3 times in strawberry.", 1.0),
    ("3", 1.0),
    ("The letter r appears 2 times in strawberry.", 0.0),
    ("There are 3 r's in the word 'strawberry'.", 1.0),
    ("The letter r appears 3 times in Quito.", 0.0),  # the right count of another word is luck
    ("The letter r appears 3 times in the morning.", 0.0),
    ([{"type": "python", "text": 'w = " strawberry"\nw.count("r")'}, {"type": "output", "text": "3"},
      {"type": "text", "text": "I don't know."}], 0.0),  # the tool's output is not the answer
])
def test_count_checker(reply, score):
    assert LETTERS.score({"answer": 3, "word": "strawberry"}, reply) == score


def test_spelling_checkers_and_copy_accuracy():
    ex = {"answer": "yrrebwarts", "call": 'w = " strawberry"\nw.strip()[::-1]', "metric": "letters_tool_acc"}
    assert LETTERS.score(ex, "strawberry backwards is yrrebwarts.") == 1.0
    assert LETTERS.score(ex, "strawberry backwards is yrrbwarts.") == 0.0
    assert LETTERS.score({"answer": "s-t-r-a-w"}, "straw is spelled S-T-R-A-W.") == 1.0
    assert LETTERS.score({"answer": "s-t-r-a-w"}, "straw is spelled s-t-a-r-w.") == 0.0
    miscopied = [{"type": "python", "text": 'w = "strawbery"\nw.strip()[::-1]'}, {"type": "output", "text": "x"},
                 {"type": "text", "text": "strawberry backwards is yrrebwarts."}]
    assert LETTERS.metrics(ex, miscopied) == {"letters_tool_acc": 1.0, "letters_copy_acc": 0.0}
    assert LETTERS.metrics(ex, "yrrebwarts") == {"letters_tool_acc": 1.0, "letters_copy_acc": 0.0}


def test_conversations_render_within_512_tokens():
    """A 300-token vocabulary is close to bytes: every larger vocabulary of the same split makes fewer tokens."""
    exs = LETTERS.examples("train", 300, 0, CONFIG) + LETTERS.examples("test", 300, 0, CONFIG)
    tok = train_tokenizer([ex["messages"][0]["content"] for ex in exs], 300)
    assert max(len(render(tok, ex["messages"])[0]) for ex in exs) <= 512
