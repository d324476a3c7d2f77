import functools

from chatforge.config import make_config
from chatforge.data import facts
from chatforge.infer.search import Passage, format_results, split_passages
from chatforge.tasks import TASKS
from chatforge.tasks.common import reply_text
from chatforge.tasks.search import REQUESTS
from chatforge.tokenizer.bpe import train_tokenizer
from chatforge.tokenizer.chat import render

CONFIG = make_config("tiny")
SEARCH = TASKS["search"]


@functools.cache
def examples(split: str, n: int = 300, seed: int = 0) -> list[dict]:
    return SEARCH.examples(split, n, seed, CONFIG)


def test_splits_share_no_person_and_no_phrasing():
    train, test = examples("train"), examples("test")
    assert not {e["name"] for e in train} & {e["name"] for e in test}
    assert not {e["messages"][0]["content"] for e in train} & {e["messages"][0]["content"] for e in test}
    phrasings = {split: {t for ts in REQUESTS[split].values() for t in ts} for split in REQUESTS}
    assert not phrasings["train"] & phrasings["test"]


def test_reply_is_a_search_call_then_the_answer_from_the_passages():
    for ex in examples("test")[:50]:
        call, output, text = ex["messages"][-1]["content"]
        assert call == {"type": "search", "text": ex["name"]}
        assert output["type"] == "output" and output["text"].startswith("[1] (facts/")
        assert ex["name"] in output["text"] and ex["answer"] in output["text"]  # answerable from the passages
        assert ex["answer"] in text["text"]


def test_output_is_formatted_as_the_search_tool_formats_index_passages():
    docs = dict(facts.documents(CONFIG.data.facts))
    for ex in examples("train")[:20]:
        lines = ex["messages"][-1]["content"][1]["text"].split("\n")
        assert 1 <= len(lines) <= CONFIG.tools.top_k  # BM25 returns only passages sharing a word with the query
        for line in lines:
            doc_id = line.split("(")[1].split(")")[0]
            (passage,) = split_passages(docs[doc_id])
            assert line.split(" ", 1)[1] == format_results([Passage(doc_id, "", passage, 0.0)]).split(" ", 1)[1]
            assert ex["name"].split()[0] in passage


def test_checker_scores_the_reply_text_only():
    ex = next(e for e in examples("test") if e["attribute"] == "city")
    call, output, _ = ex["messages"][-1]["content"]
    assert SEARCH.score(ex, ex["messages"][-1]["content"]) == 1.0
    wrong = next(c for c in facts.CITIES if c != ex["answer"])
    assert SEARCH.score(ex, [call, output, {"type": "text", "text": f"{ex['name']} was born in {wrong}."}]) == 0.0
    # the answer is in the tool's output, but the reply does not say it
    assert SEARCH.score(ex, [call, output, {"type": "text", "text": "I could not find it."}]) == 0.0
    assert SEARCH.score(ex, f"It is {ex['answer']} or {wrong}.") == 0.0  # guessing two is not an answer


def test_examples_are_deterministic_per_seed():
    assert SEARCH.examples("train", 20, 3, CONFIG) == SEARCH.examples("train", 20, 3, CONFIG)
    assert SEARCH.examples("train", 20, 3, CONFIG) != SEARCH.examples("train", 20, 4, CONFIG)


def test_conversations_render_within_the_tiny_context():
    # a tokenizer trained on the fact pages, as the run's is on a corpus holding them; a smaller vocabulary than
    # tiny's (all the pages support), so names split into more tokens than they will
    tok = train_tokenizer((t for _, t in facts.documents(CONFIG.data.facts)), 1536)
    for split in ("train", "test"):
        lengths = [len(render(tok, e["messages"])[0]) for e in examples(split)]
        assert max(lengths) <= CONFIG.sft.max_len
    assert all(reply_text(e["messages"][-1]["content"]) for e in examples("train"))


def test_speedrun_indexes_the_fact_documents_and_a_name_finds_its_person(micro_run):
    from chatforge.infer.search import LocalSearch
    from chatforge.runs import open_run

    config = open_run(micro_run, save=False).config
    person = next(p for p in facts.people(config.data.facts) if p.exposure == facts.KNOWN_EXPOSURE)
    hits = LocalSearch(micro_run / "index").search(person.name, config.tools.top_k)
    assert hits and all(h.doc_id.startswith("facts/") for h in hits)
    assert person.name in hits[0].text
