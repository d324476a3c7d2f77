import json
import random
import re

import pyarrow.parquet as pq
import pytest

from chatforge.config import DataConfig
from chatforge.data import copying
from chatforge.data.pipeline import is_val, read_parts, run_pipeline
from chatforge.data.readers import decode_bytes

FINEWEB_COLUMNS = ["text", "id", "url", "dump", "date", "file_path", "language", "language_score"]


def test_decode_falls_back_without_losing_the_file():
    assert decode_bytes("naïve".encode()) == ("naïve", "utf-8")
    text, enc = decode_bytes("“smart” £5".encode("cp1252"))
    assert text == "“smart” £5" and enc == "cp1252"
    assert decode_bytes("Grüße".encode("latin-1"), "iso-8859-1") == ("Grüße", "iso-8859-1")


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(5000)]
    first = [is_val(i, 0.1) for i in ids]
    random.Random(0).shuffle(ids)
    assert {i for i in ids if is_val(i, 0.1)} == {f"doc-{k}" for k, v in enumerate(first) if v}
    assert 0.08 < sum(first) / len(first) < 0.12


def test_pipeline_writes_fineweb_parquet_parts(tmp_path):
    body = "It was the best of times, it was the worst of times, and the town was quiet that year.\n"
    lines = [json.dumps({"text": f"Story number {i}. " + body * (3 + i % 5) + f"The end of story {i} with "
                         + " ".join(f"w{i}x{k}" for k in range(40)), "id": f"id-{i}",
                         "url": f"https://example.com/{i}"}) for i in range(50)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines))
    cfg = DataConfig(inputs=str(tmp_path / "in.jsonl"), steps="normalise,language,dedup", val_fraction=0.2,
                     docs_per_part=10)
    stats = run_pipeline(cfg, tmp_path / "out")
    assert stats["train_docs"] + stats["val_docs"] == 50 and stats["val_docs"] > 0
    train_parts = sorted((tmp_path / "out" / "train").glob("part-*.parquet"))
    assert len(train_parts) == -(-stats["train_docs"] // 10)
    assert pq.read_schema(train_parts[0]).names == FINEWEB_COLUMNS
    rows = list(read_parts(tmp_path / "out" / "train")) + list(read_parts(tmp_path / "out" / "val"))
    assert sorted(r["id"] for r in rows) == sorted(f"id-{i}" for i in range(50))
    assert all(r["language"] == "en" and r["language_score"] > 0.65 for r in rows)
    # a redo with fewer documents leaves no stale parts behind
    (tmp_path / "in.jsonl").write_text("\n".join(lines[:5]))
    run_pipeline(cfg, tmp_path / "out")
    assert sum(1 for _ in read_parts(tmp_path / "out" / "train")) + \
        sum(1 for _ in read_parts(tmp_path / "out" / "val")) == 5


def test_sample_corpus_stage(micro_run):
    stats = json.loads((micro_run / "data" / "stats.json").read_text())
    assert stats["docs_in"] == 300
    dropped = sum(n for s in stats["steps"].values() for n in s["dropped"].values())
    kept = stats["train_docs"] + stats["val_docs"] - stats["fact_docs"] - stats["copy_docs"]  # synthetic pages
    assert kept + dropped == 300
    assert kept > 250  # the web rules that do not suit plays are off
    assert list(stats["steps"]) == ["gutenberg", "normalise", "length", "language", "gopher_repetition", "pii",
                                    "dedup"]
    ids = [r["id"] for r in read_parts(micro_run / "data" / "train", ["id"])]
    assert any(i.startswith("bbc/") for i in ids) and any(i.startswith("gutenberg/") for i in ids)


def test_copy_pages_repeat_each_span_from_the_corpus_words():
    words = copying.vocabulary(["The river Stone, and 12 amber towns!", "a an the river"])
    assert words == ["amber", "and", "river", "stone", "the", "towns"]
    pages = copying.documents(20, words)
    assert pages == copying.documents(20, words) and len({i for i, _ in pages}) == 20
    for _, text in pages:
        frame_words = set(re.findall(r"[a-z]+", " ".join(copying.FRAMES).lower())) - {"s", "f"}
        assert set(re.findall(r"[a-z]+", text.lower())) <= set(words) | frame_words
        # every span of a page occurs at least twice: the longest repeated run of items covers >= 2 items
        items = text.replace('"', " ").replace("(", " ").replace(")", " ").split()
        assert any(items[i:i + 2] == items[j:j + 2] for i in range(len(items)) for j in range(i + 1, len(items)))
    with pytest.raises(ValueError, match="vocabulary"):
        copying.documents(1, [])

