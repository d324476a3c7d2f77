import random
from collections import Counter

import pyarrow.parquet as pq

from chatforge.data.pipeline import clean, is_val, normalise, read_parts, run_pipeline, strip_gutenberg
from chatforge.data.readers import Document, decode_bytes

FINEWEB_COLUMNS = ["text", "id", "url", "dump", "date", "file_path", "language", "language_score"]
BODY = "It was the best of times, it was the worst of times.\n" * 10


def test_normalise_whitespace_and_unicode():
    assert normalise("  a\r\nb  \r\n\n\n\n\ncafe\u0301 \n") == "a\nb\n\ncafé"


def test_gutenberg_boilerplate_is_stripped():
    text = ("The Project Gutenberg EBook of Nothing\nLicense blah\n"
            "*** START OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\n" + BODY +
            "*** END OF THIS PROJECT GUTENBERG EBOOK NOTHING ***\nMore license text\n")
    out = strip_gutenberg(text)
    assert out.strip() == BODY.strip()
    assert strip_gutenberg(BODY) == BODY  # no markers: untouched


def test_decode_falls_back_without_losing_the_file():
    assert decode_bytes("naïve".encode()) == ("naïve", "utf-8")
    text, enc = decode_bytes("“smart” £5".encode("cp1252"))
    assert text == "“smart” £5" and enc == "cp1252"


def test_exact_duplicates_and_short_docs_are_counted():
    docs = [Document(BODY, "a"), Document(BODY + "\n\n", "b"), Document("short", "c"), Document(BODY + "x", "d")]
    stats = Counter()
    kept = [d.id for d in clean(docs, stats)]
    assert kept == ["a", "d"]
    assert stats["dropped_exact_duplicate"] == 1 and stats["dropped_too_short"] == 1
    assert stats["docs_in"] == 4 and stats["docs_out"] == 2


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(5000)]
    first = [is_val(i, 0.1) for i in ids]
    random.Random(0).shuffle(ids)
    assert {i for i in ids if is_val(i, 0.1)} == {f"doc-{k}" for k, v in enumerate(first) if v}
    assert 0.08 < sum(first) / len(first) < 0.12


def test_pipeline_writes_fineweb_parquet(tmp_path):
    docs = [Document(f"{BODY} number {i}", f"id-{i}", url=f"https://example.com/{i}") for i in range(50)]
    stats = run_pipeline(docs, tmp_path, val_fraction=0.2, docs_per_part=10, stats=Counter())
    assert stats["train_docs"] + stats["val_docs"] == 50 and stats["val_docs"] > 0
    train_parts = sorted((tmp_path / "train").glob("part-*.parquet"))
    assert len(train_parts) == -(-stats["train_docs"] // 10)
    assert pq.read_schema(train_parts[0]).names == FINEWEB_COLUMNS
    rows = list(read_parts(tmp_path / "train")) + list(read_parts(tmp_path / "val"))
    assert sorted(r["id"] for r in rows) == sorted(d.id for d in docs)
    # a redo with fewer documents leaves no stale parts behind
    run_pipeline(docs[:5], tmp_path, 0.2, 10, Counter())
    assert sum(1 for _ in read_parts(tmp_path / "train")) + sum(1 for _ in read_parts(tmp_path / "val")) == 5


def test_sample_corpus_stage(micro_run):
    import json
    stats = json.loads((micro_run / "data" / "stats.json").read_text())
    assert stats["docs_in"] == 300
    assert stats["train_docs"] + stats["val_docs"] + stats.get("dropped_exact_duplicate", 0) \
        + stats.get("dropped_too_short", 0) == 300
    ids = [r["id"] for r in read_parts(micro_run / "data" / "train", ["id"])]
    assert any(i.startswith("bbc/") for i in ids) and any(i.startswith("gutenberg/") for i in ids)
