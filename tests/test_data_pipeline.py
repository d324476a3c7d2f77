"""The data pipeline end to end on crawl-like input: WARC/HTML/JSONL/parquet/text readers, bad input,
worker processes, kill-and-resume, --keep-dropped with `data inspect`, and the Ray executor."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from io import BytesIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from warcio.warcwriter import WARCWriter

from chatforge.config import DataConfig
from chatforge.data.pipeline import read_parts, run_pipeline
from chatforge.data.readers import write_warc
from tests.conftest import chatforge


def articles(n: int, offset: int = 0) -> list[str]:
    from chatforge.data.samples import bbc_news

    docs = list(bbc_news({}))
    return [docs[(offset + 7 * i) % len(docs)].text for i in range(n)]


def page(title: str, body: str, nav: str = "Home | News | Sport | Contact", charset: str = "utf-8") -> str:
    paras = "".join(f"<p>{p}</p>" for p in body.split("\n") if p.strip())
    return (f'<html><head><meta charset="{charset}"><title>{title}</title></head><body>'
            f"<nav><ul>{''.join(f'<li><a href=/x>{x}</a></li>' for x in nav.split(' | '))}</ul></nav>"
            f"<main><article><h1>{title}</h1>{paras}</article></main>"
            f"<footer>Copyright 2024 Example News. All rights reserved.</footer></body></html>")


def crawl(root: Path, n_files: int = 4, per_file: int = 12) -> Path:
    """WARC files of real news articles as HTML pages, with planted cases: copies of pages on another site
    (near-duplicates), German pages, and PII."""
    root.mkdir(parents=True, exist_ok=True)
    texts = articles(n_files * per_file)
    for f in range(n_files):
        pages = []
        for i in range(per_file):
            k = f * per_file + i
            body = texts[k]
            if k % 10 == 3:
                body += "\nContact the newsroom at tips@example-news.com or call +44 20 7946 0958."
            pages.append((f"https://news{f}.example/{k}", page(f"Story {k}", body).encode(),
                          "text/html; charset=utf-8"))
        copy_of = texts[f * per_file]  # the first story of each file again, under another site's navigation
        pages.append((f"https://mirror.example/{f}", page("Mirror", copy_of, "Start | Topics | About us").encode(),
                      "text/html"))
        de = ("Die Regierung hat am Dienstag neue Pläne für den Ausbau der Bahn vorgestellt. " * 3 + "\n") * 6
        pages.append((f"https://zeitung.example/{f}", page("Bahn", de).encode(), "text/html"))
        write_warc(root / f"crawl-{f:02d}.warc.gz", pages)
    return root


WEB = "extract,normalise,language,gopher_repetition,gopher_quality,c4,fineweb,dedup,pii"


def rows(out: Path) -> list[dict]:
    return sorted(list(read_parts(out / "train")) + list(read_parts(out / "val")), key=lambda r: r["id"])


def test_web_pipeline_on_warc(tmp_path):
    src = crawl(tmp_path / "crawl")
    cfg = DataConfig(inputs=str(src), steps=WEB, keep_dropped=True)
    stats = run_pipeline(cfg, tmp_path / "out")
    assert stats["docs_in"] == 4 * 14 and stats["shards"] == 4
    assert stats["steps"]["language"]["dropped"] == {"language_de": 4}
    assert stats["steps"]["dedup"]["dropped"].get("near_duplicate", 0) + \
        stats["steps"]["dedup"]["dropped"].get("exact_duplicate", 0) == 4  # the four mirrored copies
    kept = rows(tmp_path / "out")
    assert not any(r["url"].startswith("https://mirror.example") for r in kept)
    assert all(r["language"] == "en" for r in kept)
    nav_and_footer = {"Home", "Sport", "Contact", "Copyright 2024 Example News. All rights reserved."}
    assert not any(nav_and_footer & set(r["text"].split("\n")) for r in kept)
    assert not any("tips@example-news.com" in r["text"] or "7946 0958" in r["text"] for r in kept)
    assert stats["pii_replaced"]["email"] >= 1 and stats["pii_replaced"]["phone"] >= 1
    for name, s in stats["steps"].items():  # the funnel adds up
        assert s["docs_in"] - s["docs_out"] == sum(s["dropped"].values()), name
    dropped = pq.read_table(tmp_path / "out" / "work" / "dropped" / "00000.parquet").to_pylist()
    assert {(r["step"], r["reason"]) for r in dropped} >= {("language", "language_de")}


def test_every_reader_and_bad_input(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    good = articles(6, offset=100)
    write_warc(src / "a.warc.gz", [("https://a.example/1", page("A", good[0]).encode(), "text/html"),
                                   ("https://a.example/img", b"\x89PNG\r\n\x1a\n" + bytes(500), "image/png")])
    # a crawl file cut off mid-way: the records before the damage are read
    write_warc(src / "cut.warc.gz", [(f"https://cut.example/{i}", page("C", good[1]).encode() + bytes([65 + i]) * 50,
                                      "text/html") for i in range(3)])
    data = (src / "cut.warc.gz").read_bytes()
    (src / "cut.warc.gz").write_bytes(data[: int(len(data) * 0.8)])
    (src / "b.html").write_bytes(page("B", good[2], charset="utf-8").encode()[:-200] + b"\xff\xfe\xfa broken"
                                 + page("", "").encode()[-200:])
    (src / "c.jsonl").write_text(json.dumps({"text": good[3], "id": "jsonl-1", "url": "https://c.example"})
                                 + "\n{not json\n")
    pq.write_table(pa.table({"text": [good[4]], "id": ["pq-1"], "url": ["https://d.example"]}), src / "d.parquet")
    (src / "e.txt").write_text(good[5])
    with open(src / "f.warc.wet.gz", "wb") as f:  # WET: Common Crawl's extracted text, `conversion` records
        w = WARCWriter(f, gzip=True)
        w.write_record(w.create_warc_record("https://f.example/", "conversion", payload=BytesIO(good[0].encode()),
                                            warc_content_type="text/plain"))
    (src / "empty.html").write_bytes(b"")
    (src / "empty.warc.gz").write_bytes(b"")
    (src / "huge.txt").write_bytes(b"word " * 10_000_000)  # a 50 MB "document"
    (src / "notes.pdf").write_bytes(b"%PDF-1.4")
    with gzip.open(src / "bad.jsonl.gz", "wb") as f:
        f.write(b'{"text": "x"}\n' * 1000)
    (src / "bad.jsonl.gz").write_bytes((src / "bad.jsonl.gz").read_bytes()[:40])
    stats = run_pipeline(DataConfig(inputs=str(src), steps="extract,normalise,language,dedup"), tmp_path / "out")
    read = stats["read"]
    assert read["read_not_html"] == 1 and read["read_too_large"] == 1 and read["read_empty_file"] == 2
    assert read["read_truncated_archive"] == 2 and read["read_bad_json_line"] == 1
    assert read["read_unknown_file_type"] == 1 and read["read_decoded_as_cp1252"] == 1
    ids = {r["id"] for r in rows(tmp_path / "out")}
    assert {"jsonl-1", "pq-1", str(src / "b.html"), str(src / "e.txt")} <= ids
    assert sum(i.startswith("urn:uuid") for i in ids) >= 2  # a.warc.gz's page and cut's first record(s)
    # the WET text of a.warc.gz's page, and cut.warc.gz's second copy of its page, are near-duplicates
    assert stats["steps"]["dedup"]["dropped"] == {"near_duplicate": 2}


def _cli_data(run: Path, src: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chatforge", "data", "--run", str(run), "--input", str(src),
            "--steps", WEB, *extra]


def test_killed_run_resumes_to_the_same_output(tmp_path):
    src = crawl(tmp_path / "crawl", n_files=12, per_file=10)
    chatforge(*_cli_data(tmp_path / "whole", src, "--workers", "2")[3:])
    proc = subprocess.Popen(_cli_data(tmp_path / "killed", src), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    work = tmp_path / "killed" / "data" / "work"
    deadline = time.time() + 120
    while len(list(work.glob("*.stats.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(work.glob("*.stats.json")))
    assert 2 <= done_before < 12, done_before
    out = chatforge(*_cli_data(tmp_path / "killed", src)[3:])
    assert f"resuming, {done_before} of 12 shards already done" in out.stdout
    assert rows(tmp_path / "killed" / "data") == rows(tmp_path / "whole" / "data")
    # the run is idempotent: the stage is done, and a forced redo writes the same documents again
    chatforge(*_cli_data(tmp_path / "killed", src, "--force")[3:])
    assert rows(tmp_path / "killed" / "data") == rows(tmp_path / "whole" / "data")


def test_cli_keep_dropped_and_inspect(tmp_path):
    src = crawl(tmp_path / "crawl", n_files=1)
    chatforge(*_cli_data(tmp_path / "r", src, "--keep-dropped")[3:])
    out = chatforge("data", "inspect", "--run", str(tmp_path / "r"), "--samples", "2").stdout
    assert "language_de" in out and "=== kept" in out and "=== dropped" in out and "[language: language_de]" in out
    bad = chatforge("data", "--run", str(tmp_path / "r2"), "--input", str(tmp_path / "nope"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    bad = chatforge("data", "--run", str(tmp_path / "r3"), "--input", str(src), "--steps", "extract,bogus",
                    check=False)
    assert bad.returncode == 2 and "unknown data step(s) bogus" in bad.stderr


def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    src = crawl(tmp_path / "crawl", n_files=2, per_file=6)
    local = run_pipeline(DataConfig(inputs=str(src), steps=WEB), tmp_path / "local")
    # The test once failed under load and never again in 5 runs (one beside two busy loops: 58 s instead of
    # 10 s). Ray gives a starting worker 60 s to register, which a 2-core machine running other jobs can
    # overrun: the cluster run_pipeline would start, with a patient limit, shut down afterwards.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _system_config={"worker_register_timeout_seconds": 600})
    try:
        ray_stats = run_pipeline(DataConfig(inputs=str(src), steps=WEB, executor="ray", workers=2), tmp_path / "ray")
    finally:
        ray.shutdown()
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    def counts(stats: dict) -> dict:
        return {name: {k: v for k, v in s.items() if k != "seconds"} for name, s in stats["steps"].items()}

    assert counts(ray_stats) == counts(local)
