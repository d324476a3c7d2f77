import itertools
import json
import re
from collections import Counter

import pyarrow.parquet as pq
import pytest

from chatforge.config import PRESETS, make_config
from chatforge.data import facts
from chatforge.data.pipeline import SCHEMA, PartWriter, run_pipeline
from chatforge.errors import UserError
from chatforge.infer.search import split_passages
from chatforge.runs import open_run
from chatforge.tasks import TASKS
from chatforge.tasks.facts import QUESTIONS
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import build_tokenizer_and_shards


def test_people_are_deterministic_with_every_exposure_group():
    ps = facts.people(64)
    assert ps == facts.people.__wrapped__(64)
    assert Counter(p.exposure for p in ps) == {e: 16 for e in facts.EXPOSURES}
    assert len({p.name.split()[1] for p in ps}) == 64  # one surname per person: no two people confused


def test_each_person_is_mentioned_as_often_as_its_exposure():
    paragraphs = [para for _, text in facts.documents(32) for para in text.split("\n\n")[1:]]
    for p in facts.people(32):
        assert sum(bool(re.search(rf"\b{p.name}\b", para)) for para in paragraphs) == p.exposure


def test_every_paragraph_states_all_four_attributes_of_its_person():
    ps = {p.name: p for p in facts.people(16)}
    for _, text in facts.documents(16):
        for para in text.split("\n\n")[1:]:  # the first is the title
            names = [n for n in ps if re.search(rf"\b{n}\b", para)]
            assert len(names) == 1, para
            p = ps[names[0]]
            assert all(str(v) in para for v in (p.city, p.year, p.job, p.hobby)), para


def directory_lists(text: str) -> list[tuple[str, str]]:
    """A directory page's (title, body) lists: a paragraph that is a title opens one."""
    out: list[tuple[str, list[str]]] = []
    for chunk in text.split("\n\n"):
        if chunk in facts.TITLES:
            out.append((chunk, []))
        else:
            out[-1][1].append(chunk)
    return [(title, "\n\n".join(body)) for title, body in out]


def test_a_directory_list_names_one_attribute_of_known_people_in_one_frame_after_their_biographies():
    ps = facts.people(256)
    pages = facts.directories(256, 6)
    assert pages == facts.directories(256, 6) and len(pages) == 6
    seen = set()
    for _, text in pages:
        lists = directory_lists(text)
        assert 1 <= len(lists) <= facts.DIRECTORY_LISTS
        bodies = [body.split("\n\n", 1) for _, body in lists]
        names = [m.group() for p in ps for _, body in bodies for m in re.finditer(rf"\b{p.name}\b", body)]
        assert len(names) == len(set(names))  # a person is in one list of a page
        for prose, body in bodies:
            listed = sorted((m.start(), p) for p in ps for m in re.finditer(rf"\b{p.name}\b", body))
            for _, p in listed:  # the page states what its list gives
                assert all(str(v) in prose for v in (p.name, p.city, p.year, p.job, p.hobby))
            assert all(p.exposure == facts.KNOWN_EXPOSURE for _, p in listed)
            assert facts.DIRECTORY_LINES[0] <= len(listed) <= facts.DIRECTORY_LINES[1]
            layouts = {(frame, sep, a) for frame in facts.DIRECTORY_FRAMES for sep in facts.DIRECTORY_SEPARATORS
                       for a in facts.ATTRIBUTE_NAMES
                       if body == sep.join(frame.format(name=p.name, value=getattr(p, a)) for _, p in listed)}
            assert len({a for *_, a in layouts}) == 1, body
            seen |= layouts
    assert {a for *_, a in seen} == set(facts.ATTRIBUTE_NAMES) and {f for f, *_ in seen} == set(facts.DIRECTORY_FRAMES)
    assert facts.directories(0, 5) == ()


def test_invented_names_never_appear_in_the_corpus():
    corpus_surnames = {p.name.split()[1] for p in facts.people(256)}
    invented = facts.invented_names(400)
    assert not corpus_surnames & {n.split()[1] for n in invented}
    text = "\n".join(t for _, t in facts.documents(256))
    assert not any(re.search(rf"\b{n.split()[1]}\b", text) for n in invented)


def test_a_fact_page_is_one_search_passage():
    for _, text in facts.documents(64):
        assert len(split_passages(text)) == 1
        assert len(text.split()) <= facts.PAGE_WORDS + 25  # one paragraph may cross the budget's end


def test_data_stage_mixes_fact_and_copy_pages_into_train_only(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(6):
        (src / f"doc{i}.txt").write_text(f"Document number {i} talks about something different. " * 30 + str(i))
    cfg = make_config("micro").data
    cfg.inputs, cfg.steps, cfg.facts, cfg.copy_docs, cfg.val_fraction = str(src), "normalise,dedup", 8, 5, 0.3
    cfg.directory_pages = 3
    stats = run_pipeline(cfg, tmp_path / "data")
    train = pq.read_table(tmp_path / "data" / "train").to_pylist()
    val = pq.read_table(tmp_path / "data" / "val").to_pylist()
    ids = [r["id"] for r in train]
    n_facts = len(facts.documents(8)) + 3
    assert sum(i.startswith("facts/directory/") for i in ids) == 3
    assert stats["fact_docs"] == n_facts == sum(i.startswith("facts/") for i in ids)
    assert stats["copy_docs"] == 5 == sum(i.startswith("copy/") for i in ids)
    assert not any(r["id"].startswith(("facts/", "copy/")) for r in val)
    assert stats["train_docs"] == len(train) and len(train) + len(val) == 6 + n_facts + 5
    is_fact = [i.startswith(("facts/", "copy/")) for i in ids]
    assert sum(a != b for a, b in itertools.pairwise(is_fact)) >= 3  # spread between documents, not one block
    assert json.loads((tmp_path / "data" / "stats.json").read_text())["fact_docs"] == n_facts


def test_the_tokenizer_learns_no_merges_from_directory_pages(tmp_path):
    run = open_run(tmp_path / "run", "micro")
    run.config.tokenizer.vocab_size = 290
    rows = [{"text": "The river rose over the bridge and the town. " * 40, "id": "doc/1"},
            {"text": "Zorvaquel: Lisbon\nZorvaquel: Oslo\n" * 200, "id": f"{facts.DIRECTORY_ID}00000"}]
    for split in ("train", "val"):
        writer = PartWriter(run.path / "data" / split, 100)
        for row in rows[: 2 if split == "train" else 1]:
            writer.add({k: row.get(k) for k in SCHEMA.names})
        writer.flush()
    build_tokenizer_and_shards(run)
    tok = load_tokenizer(run.path / "tokenizer")
    assert len(tok.encode(" river")) == 1 and len(tok.encode(" Zorvaquel")) > 3  # merges: the natural text's only
    assert tok.decode(tok.encode(rows[1]["text"])) == rows[1]["text"]  # the page is still trained on, in pieces


def test_every_preset_has_the_fact_pages_its_mixture_and_probing_need():
    for preset in PRESETS:
        cfg = make_config(preset)
        assert cfg.data.facts > 0, preset  # the speedrun probes on every preset
        assert cfg.data.copy_docs > 0 or preset == "micro", preset


CONFIG = make_config("tiny")
FACTS = TASKS["facts"]


def test_qa_splits_share_no_person_no_invented_name_and_no_phrasing():
    train, test = FACTS.examples("train", 400, 0, CONFIG), FACTS.examples("test", 400, 0, CONFIG)
    assert not {e["name"] for e in train} & {e["name"] for e in test}
    assert not {e["messages"][0]["content"] for e in train} & {e["messages"][0]["content"] for e in test}
    questions = {s: {t for ts in QUESTIONS[s].values() for t in ts} for s in QUESTIONS}
    assert not questions["train"] & questions["test"]
    assert {e["exposure"] for e in train} == {facts.KNOWN_EXPOSURE}  # training asks only what the model can know
    assert {e["metric"] for e in test} == {"known_acc", "refusal_invented"}
    corpus = {p.name for p in facts.people(CONFIG.data.facts)}
    assert all(e["name"] not in corpus for e in test if e["metric"] == "refusal_invented")



def test_rl_practice_asks_the_train_partition_both_ways():
    """RL's practice: known train people and invented train-partition names (to refuse), none of the test's."""
    assert FACTS.rl_split == "practice"
    practice, test = FACTS.examples("practice", 400, 0, CONFIG), FACTS.examples("test", 400, 0, CONFIG)
    assert {e["metric"] for e in practice} == {"known_acc", "refusal_invented"}
    assert not {e["name"] for e in practice} & {e["name"] for e in test}
    assert not {e["messages"][0]["content"] for e in practice} & {e["messages"][0]["content"] for e in test}
    corpus = {p.name for p in facts.people(CONFIG.data.facts)}
    assert all(e["name"] not in corpus for e in practice if e["metric"] == "refusal_invented")

def test_qa_checker_on_right_wrong_and_refusing_replies():
    test = FACTS.examples("test", 60, 0, CONFIG)
    for ex in test:
        assert FACTS.score(ex, ex["messages"][-1]["content"]) == 1.0
    known = next(e for e in test if e["metric"] == "known_acc" and e["attribute"] == "job")
    other = next(j for j in facts.JOBS if j != known["answer"])
    assert FACTS.score(known, f"{known['name']} is a {other}.") == 0.0
    assert FACTS.score(known, f"A {known['answer']} or a {other}.") == 0.0
    assert FACTS.score(known, f"I don't know what {known['name']} does.") == 0.0
    assert FACTS.score(known, [{"type": "output", "text": known["answer"]}, {"type": "text", "text": "No idea."}]) == 0
    invented = next(e for e in test if e["metric"] == "refusal_invented")
    assert FACTS.score(invented, f"{invented['name']} was born in Lyon.") == 0.0
    assert FACTS.score(invented, "Sorry, I do not know who that is.") == 1.0
    year = next(e for e in test if e["metric"] == "known_acc" and e["attribute"] == "year")
    assert FACTS.score(year, f"In {year['answer']}.") == 1.0
    assert FACTS.score(year, f"In {int(year['answer']) + 1}.") == 0.0


def test_qa_is_deterministic_per_seed_and_renders_short():
    a = FACTS.examples("test", 30, 5, CONFIG)
    assert a == FACTS.examples("test", 30, 5, CONFIG) != FACTS.examples("test", 30, 6, CONFIG)
    assert all(len(e["messages"][0]["content"]) + len(str(e["messages"][1]["content"])) < 200 for e in a)


def test_qa_without_the_fact_corpus_is_a_user_error():
    cfg = make_config("d12")
    cfg.data.facts = 0
    with pytest.raises(UserError, match="data.facts"):
        FACTS.examples("train", 5, 0, cfg)
