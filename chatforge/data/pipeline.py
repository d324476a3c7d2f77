"""Documents → clean, deduplicated, split parquet parts with FineWeb's columns, plus stats.json.

The steps are named in `data.steps` and run in that order on every document (filters.py, extract.py,
pii.py); `dedup` needs every shard, so it runs after the per-document steps wherever it is listed.
The input is split into shards (an archive or parquet file each, or `files_per_shard` HTML/text
files) that N worker processes (or Ray) run independently; a finished shard leaves
`data/work/NNNNN.parquet` + `NNNNN.stats.json`, so a killed run resumes where it stopped and a re-run
writes the same bytes. The train/val split hashes the document id, so it does not depend on order.
"""

import hashlib
import json
import multiprocessing as mp
import random
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from chatforge.data import copying, dedup, facts, filters
from chatforge.data.extract import Extract
from chatforge.data.pii import PII
from chatforge.data.readers import Document, bump, expand_inputs, file_kind, read_file
from chatforge.errors import UserError

SCHEMA = pa.schema([
    ("text", pa.string()), ("id", pa.string()), ("url", pa.string()), ("dump", pa.string()),
    ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
    ("language_score", pa.float64()),
])
WORK_SCHEMA = pa.schema([*SCHEMA, pa.field("hash", pa.binary(16)), pa.field("minhash", pa.binary(4 * dedup.N_HASHES)),
                         pa.field("sentences", pa.binary())])
DROPPED_SCHEMA = SCHEMA.append(pa.field("step", pa.string())).append(pa.field("reason", pa.string()))

# The web recipe is FineWeb's, in FineWeb's order. The sample corpus keeps the rules that suit edited
# articles and plays: C4's and FineWeb's line rules drop plays outright, and Gopher's alpha-word rule
# would drop 97 BBC business articles for their figures.
WEB_STEPS = "url,extract,normalise,language,gopher_repetition,gopher_quality,c4,fineweb,dedup,pii"
SAMPLE_STEPS = "gutenberg,normalise,length,language,gopher_repetition,dedup,pii"
COPY_VOCAB_DOCS = 500  # kept documents whose words the copy pages draw from

STEP_MAKERS: dict[str, Callable] = {
    "url": lambda c: filters.UrlFilter(c.url_domains, c.url_substrings, c.url_words, c.url_soft_words),
    "extract": lambda c: Extract(c.extractor),
    "normalise": lambda c: filters.normalise_step,
    "gutenberg": lambda c: filters.gutenberg_step,
    "length": lambda c: filters.MinLength(c.min_chars),
    "language": lambda c: filters.LanguageID([x for x in c.languages.split(",") if x], c.language_threshold),
    "gopher_repetition": lambda c: filters.gopher_repetition,
    "gopher_quality": lambda c: filters.gopher_quality,
    "c4": lambda c: filters.c4_quality,
    "fineweb": lambda c: filters.fineweb_quality,
    "pii": lambda c: PII(),
}


def step_names(cfg) -> list[str]:
    names = [s.strip() for s in (cfg.steps or (WEB_STEPS if cfg.inputs else SAMPLE_STEPS)).split(",") if s.strip()]
    unknown = [s for s in names if s not in STEP_MAKERS and s != "dedup"]
    if unknown:
        raise UserError(f"unknown data step(s) {', '.join(unknown)}; choose from {', '.join([*STEP_MAKERS, 'dedup'])}")
    return names


def make_steps(cfg) -> list[tuple[str, Callable]]:
    return [(name, STEP_MAKERS[name](cfg)) for name in step_names(cfg) if name != "dedup"]


def is_val(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return h % 1_000_000 < val_fraction * 1_000_000


@dataclass
class Shard:
    index: int
    files: list[str]  # empty: the built-in sample corpus


def plan_shards(cfg) -> list[Shard]:
    if not cfg.inputs:
        return [Shard(0, [])]
    files = expand_inputs([s for s in cfg.inputs.split(",") if s.strip()])
    if not files:
        raise UserError(f"no input files in {cfg.inputs!r}")
    groups: list[list[str]] = []
    small: list[str] = []
    for f in files:
        if file_kind(f) in ("html", "text", None):  # unknown files are counted (and skipped) by a shard
            small.append(str(f))
            if len(small) == cfg.files_per_shard:
                groups.append(small)
                small = []
        else:
            groups.append([str(f)])
    if small:
        groups.append(small)
    return [Shard(i, g) for i, g in enumerate(groups)]


def shard_docs(shard: Shard, cfg, stats: dict) -> Iterator[Document]:
    if shard.files:
        for f in shard.files:
            yield from read_file(Path(f), stats)
        return
    from chatforge.data.samples import sample_corpus

    docs: Iterable[Document] = sample_corpus(stats)
    if cfg.max_docs:  # a deterministic subset that draws from every source, not just the first one
        docs = sorted(docs, key=lambda d: hashlib.blake2b(d.id.encode(), digest_size=8).digest())[: cfg.max_docs]
    yield from docs


def _row(doc: Document) -> dict:
    return {k: getattr(doc, k) for k in SCHEMA.names}


def _write_parquet(rows: list[dict], schema: pa.Schema, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp, compression="zstd")
    tmp.replace(path)


def nbytes(text: str) -> int:
    # isascii() is a flag lookup: most pages skip encoding a copy of themselves twice per step
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def run_steps(doc: Document, steps: list[tuple[str, Callable]], stats: dict) -> tuple[str, str] | None:
    """Runs `doc` through the steps, counting docs and bytes in/out per step; (step, reason) if dropped."""
    for name, step in steps:
        s = stats["steps"].setdefault(name, {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0,
                                             "dropped": {}, "seconds": 0.0})
        s["docs_in"] += 1
        s["bytes_in"] += nbytes(doc.text if doc.html is None else doc.html)
        t0 = time.perf_counter()
        reason = step(doc)
        s["seconds"] += time.perf_counter() - t0
        if reason is not None:
            bump(s["dropped"], reason)
            return name, reason
        s["docs_out"] += 1
        s["bytes_out"] += nbytes(doc.text)
    return None


def process_shard(shard: Shard, cfg, steps: list[tuple[str, Callable]], work: Path,
                  tick: Callable[[int], None]) -> dict:
    """One shard through the per-document steps → work/NNNNN.parquet (+ MinHash signatures) and
    NNNNN.stats.json, written last: its presence marks the shard done."""
    stats: dict = {"read": {}, "steps": {}, "docs_in": 0, "docs_out": 0}
    kept: list[dict] = []
    dropped: list[dict] = []
    pending = 0
    for doc in shard_docs(shard, cfg, stats["read"]):
        stats["docs_in"] += 1
        verdict = run_steps(doc, steps, stats)
        if verdict is None:
            row = _row(doc)
            row["hash"] = dedup.content_hash(doc.text)
            row["minhash"] = dedup.minhash(doc.text).tobytes()
            row["sentences"] = dedup.sentence_hashes(doc.text).tobytes()
            kept.append(row)
        elif cfg.keep_dropped:
            doc.text = doc.text or doc.html or ""
            dropped.append(_row(doc) | {"step": verdict[0], "reason": verdict[1]})
        pending += 1
        if pending == 64:
            tick(pending)
            pending = 0
    tick(pending)
    stats["docs_out"] = len(kept)
    for _, step in steps:
        if isinstance(step, PII):
            stats["pii_replaced"] = step.counts
            step.counts = {}
    stem = f"{shard.index:05d}"
    if cfg.keep_dropped:
        (work / "dropped").mkdir(exist_ok=True)
        _write_parquet(dropped, DROPPED_SCHEMA, work / "dropped" / f"{stem}.parquet")
    _write_parquet(kept, WORK_SCHEMA, work / f"{stem}.parquet")
    from chatforge.runs import write_json

    write_json(work / f"{stem}.stats.json", stats)
    return stats


# Worker processes build their steps (the language model, blocklists) once, not once per shard.
_worker: dict = {}


def _init_worker(cfg, work: Path, counter) -> None:
    _worker.update(cfg=cfg, steps=make_steps(cfg), work=work, counter=counter)


def _tick_counter(n: int) -> None:
    with _worker["counter"].get_lock():
        _worker["counter"].value += n


def _run_in_worker(shard: Shard) -> dict:
    return process_shard(shard, _worker["cfg"], _worker["steps"], _worker["work"], _tick_counter)


def run_local(todo: list[Shard], cfg, work: Path) -> None:
    bar = tqdm(desc="data", unit="doc", smoothing=0.1)
    try:
        if cfg.workers <= 1:
            steps = make_steps(cfg)
            for shard in todo:
                process_shard(shard, cfg, steps, work, bar.update)
            return
        # spawn, not fork: a forked child inherits torch's and tqdm's threads and locks
        ctx = mp.get_context("spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(cfg.workers, _init_worker, (cfg, work, counter)) as pool:
            result = pool.map_async(_run_in_worker, todo, chunksize=1)
            while not result.ready():
                result.wait(0.5)
                bar.update(counter.value - bar.n)
            result.get()  # re-raises a worker's exception
            bar.update(counter.value - bar.n)
    finally:
        bar.close()


def run_ray(todo: list[Shard], cfg, work: Path) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("data.executor=ray needs `pip install 'chatforge[ray]'`") from None
    if not ray.is_initialized():
        ray.init(num_cpus=max(1, cfg.workers), include_dashboard=False, log_to_driver=False)

    def run(row: dict) -> dict:
        process_shard(Shard(row["index"], list(row["files"])), cfg, make_steps(cfg), work, lambda n: None)
        return {"index": row["index"]}

    ds = ray.data.from_items([asdict(s) for s in todo], override_num_blocks=max(1, len(todo)))
    done = ds.map(run, num_cpus=1).take_all()
    assert len(done) == len(todo), f"ray finished {len(done)} of {len(todo)} shards"


class PartWriter:
    """Writes `part-00000.parquet`, ... of at most `per_part` documents each."""

    def __init__(self, out_dir: Path, per_part: int):
        self.out_dir, self.per_part = Path(out_dir), per_part
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.parts = 0
        self.docs = 0

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.per_part:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.parts:
            return
        _write_parquet(self.rows, SCHEMA, self.out_dir / f"part-{self.parts:05d}.parquet")
        self.docs += len(self.rows)
        self.parts += 1
        self.rows = []


def merge_stats(parts: list[dict]) -> dict:
    out: dict = {"docs_in": 0, "docs_out": 0, "read": {}, "steps": {}, "pii_replaced": {}}
    for p in parts:
        out["docs_in"] += p["docs_in"]
        for k, v in p["read"].items():
            bump(out["read"], k, v)
        for k, v in p.get("pii_replaced", {}).items():
            bump(out["pii_replaced"], k, v)
        for name, s in p["steps"].items():
            t = out["steps"].setdefault(name, {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0,
                                               "dropped": {}, "seconds": 0.0})
            for k in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
                t[k] += s[k]
            t["seconds"] = round(t["seconds"], 3)
            for k, v in s["dropped"].items():
                bump(t["dropped"], k, v)
    return out


def finish(shards: list[Shard], cfg, out_dir: Path, work: Path, use_dedup: bool, stats: dict) -> dict:
    """Dedup across shards, then the kept documents in input order → {train,val}/part-*.parquet."""
    t0 = time.perf_counter()
    tables = [pq.read_table(work / f"{s.index:05d}.parquet") for s in shards]
    n = sum(t.num_rows for t in tables)
    reasons: list[str | None] = [None] * n
    if use_dedup and n:
        sigs = np.frombuffer(b"".join(b for t in tables for b in t.column("minhash").to_pylist()), dtype=np.uint32)
        hashes = [h for t in tables for h in t.column("hash").to_pylist()]
        sentences = [np.frombuffer(b, dtype=np.uint64) for t in tables for b in t.column("sentences").to_pylist()]
        _, reasons = dedup.clusters(sigs.reshape(n, dedup.N_HASHES), hashes, sentences)
    for old in out_dir.glob("*/part-*.parquet"):  # a redo must not leave parts of an earlier run behind
        old.unlink()
    writers = {split: PartWriter(out_dir / split, cfg.docs_per_part) for split in ("train", "val")}
    d = {"docs_in": n, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "dropped": {}, "seconds": 0.0}
    dropped: list[dict] = []
    # The synthetic pages (facts: data/facts.py, copying: data/copying.py) skip the steps: they are clean, and
    # dedup would merge their templates. They train only, so val bits per byte compare with and without them,
    # spread evenly between the kept documents: a training window starts at each document.
    fact_docs = (*facts.documents(cfg.facts), *facts.directories(cfg.facts, cfg.directory_pages)) if cfg.facts else ()
    copy_docs = ()
    if cfg.copy_docs:
        texts = (t for table in tables for t in table.column("text").to_pylist())
        kept_texts = list(islice((t for t, r in zip(texts, reasons, strict=True) if r is None), COPY_VOCAB_DOCS))
        words = copying.vocabulary(kept_texts)
        copy_docs = copying.documents(cfg.copy_docs, words) if words else ()  # no document kept: nothing to copy
    fact_rows = [_row(Document(text, doc_id, language="en")) for doc_id, text in (*fact_docs, *copy_docs)]
    random.Random(0).shuffle(fact_rows)
    n_kept = max(1, reasons.count(None))
    i = 0
    for t in tables:
        for row in t.select(SCHEMA.names).to_pylist():
            d["bytes_in"] += nbytes(row["text"])
            if reasons[i] is None:
                d["docs_out"] += 1
                d["bytes_out"] += nbytes(row["text"])
                writers["val" if is_val(row["id"], cfg.val_fraction) else "train"].add(row)
                for fact in fact_rows[(d["docs_out"] - 1) * len(fact_rows) // n_kept :
                                      d["docs_out"] * len(fact_rows) // n_kept]:
                    writers["train"].add(fact)
            else:
                bump(d["dropped"], reasons[i])
                if cfg.keep_dropped:
                    dropped.append(row | {"step": "dedup", "reason": reasons[i]})
            i += 1
    if not d["docs_out"]:  # no document survived: the synthetic pages alone
        for fact in fact_rows:
            writers["train"].add(fact)
    stats["fact_docs"], stats["copy_docs"] = len(fact_docs), len(copy_docs)
    for w in writers.values():
        w.flush()
    if use_dedup:
        d["seconds"] = round(time.perf_counter() - t0, 3)
        stats["steps"]["dedup"] = d
        if cfg.keep_dropped:
            _write_parquet(dropped, DROPPED_SCHEMA, work / "dropped" / "dedup.parquet")
    stats["docs_out"] = d["docs_out"]
    stats["train_docs"], stats["val_docs"] = writers["train"].docs, writers["val"].docs
    return stats


def run_pipeline(cfg, out_dir: Path, resume: bool = False) -> dict:
    """The whole data pipeline into `out_dir`. With `resume`, shards finished by an earlier attempt with
    the same config are kept; otherwise the work directory starts empty."""
    from chatforge.runs import write_json

    if cfg.executor not in ("local", "ray"):
        raise UserError(f"unknown data.executor {cfg.executor!r}; choose local or ray")
    out_dir, t0 = Path(out_dir), time.time()
    work = out_dir / "work"
    names = step_names(cfg)
    # How many workers ran a shard, or where, does not change its output: a resume may use other ones.
    # The work columns do: shards written before the sentence hashes existed are redone, not misread.
    fingerprint = json.dumps(asdict(cfg) | {"steps": names, "workers": None, "executor": None,
                                            "work_columns": WORK_SCHEMA.names}, sort_keys=True)
    if not resume or not (work / "config.json").exists() or (work / "config.json").read_text() != fingerprint:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(fingerprint)
    shards = plan_shards(cfg)
    todo = [s for s in shards if not (work / f"{s.index:05d}.stats.json").exists()]
    # Largest shards first, so no worker is left with a big one at the end while the others idle.
    # The output order is the shard index, whatever order they ran in.
    todo.sort(key=lambda s: -sum(Path(f).stat().st_size for f in s.files))
    if len(todo) < len(shards):
        print(f"data: resuming, {len(shards) - len(todo)} of {len(shards)} shards already done")
    (run_ray if cfg.executor == "ray" else run_local)(todo, cfg, work)
    stats = merge_stats([json.loads((work / f"{s.index:05d}.stats.json").read_text()) for s in shards])
    stats = finish(shards, cfg, out_dir, work, "dedup" in names, stats)
    stats["shards"] = len(shards)
    stats["seconds"] = round(time.time() - t0, 2)
    stats["docs_per_s"] = round(stats["docs_in"] / max(stats["seconds"], 1e-9), 1)
    write_json(out_dir / "stats.json", stats)
    return stats


def read_parts(split_dir: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of every part in a split directory, in part order."""
    paths = sorted(Path(split_dir).glob("part-*.parquet"))
    if not paths:
        raise UserError(f"no parquet parts in {split_dir}")
    for path in paths:
        yield from pq.read_table(path, columns=columns).to_pylist()


def build_sample_corpus(run, resume: bool = False) -> dict:
    """The `data` stage: the sample corpus (or `data.inputs`) → runs/NAME/data/{train,val}/part-*.parquet."""
    out = run_pipeline(run.config.data, run.path / "data", resume)
    print(funnel_line(out))
    return out


def funnel_line(stats: dict) -> str:
    drops = {}
    for s in stats["steps"].values():
        for k, v in s["dropped"].items():
            bump(drops, k, v)
    top = ", ".join(f"{v} {k}" for k, v in sorted(drops.items(), key=lambda kv: -kv[1])[:4])
    return (f"data: {stats['docs_in']} documents in, {stats['train_docs']} train + {stats['val_docs']} val kept "
            f"in {stats['seconds']} s ({stats['docs_per_s']} docs/s)" + (f"; dropped: {top}" if top else "")
            + (f"; train includes {stats['fact_docs']} fact and {stats['copy_docs']} copy pages"
               if stats.get("fact_docs") or stats.get("copy_docs") else ""))


def inspect(data_dir: Path, samples: int = 3, seed: int = 0, width: int = 300) -> str:
    """The funnel of a finished data stage (documents and bytes per step, drop reasons) and random
    kept and dropped documents, as text."""
    data_dir = Path(data_dir)
    path = data_dir / "stats.json"
    if not path.exists():
        raise UserError(f"no {path}: run `chatforge data` first")
    stats = json.loads(path.read_text())
    lines = [f"{'step':<20}{'docs in':>10}{'docs out':>10}{'kept %':>8}{'MB in':>9}{'MB out':>9}{'cpu s':>8}"]
    for name, s in stats["steps"].items():
        pct = 100 * s["docs_out"] / max(1, s["docs_in"])
        lines.append(f"{name:<20}{s['docs_in']:>10}{s['docs_out']:>10}{pct:>7.1f}%"
                     f"{s['bytes_in'] / 1e6:>9.2f}{s['bytes_out'] / 1e6:>9.2f}{s.get('seconds', 0):>8.1f}")
        for reason, k in sorted(s["dropped"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {reason:<36}{k:>8}")
    if stats["read"]:
        lines.append("read: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["read"].items())))
    if stats.get("pii_replaced"):
        lines.append("pii replaced: " + ", ".join(f"{k}={v}" for k, v in sorted(stats["pii_replaced"].items())))
    lines.append(f"{stats['docs_in']} in -> {stats['train_docs']} train + {stats['val_docs']} val "
                 f"({stats.get('docs_per_s', '?')} docs/s, {stats.get('shards', '?')} shards)")
    rng = random.Random(seed)

    def show(title: str, rows: list[dict]) -> None:
        lines.append(f"\n=== {title} ({len(rows)} of them, {min(samples, len(rows))} at random) ===")
        for r in rng.sample(rows, min(samples, len(rows))):
            why = f" [{r['step']}: {r['reason']}]" if "reason" in r else ""
            text = " ".join(r["text"].split())
            lines.append(f"--- {r['id']}{why} {r.get('url') or ''}\n{text[:width]}{'...' if len(text) > width else ''}")

    show("kept", list(read_parts(data_dir / "train", ["id", "url", "text"])))
    dropped_files = sorted((data_dir / "work" / "dropped").glob("*.parquet"))
    if dropped_files:
        show("dropped", [r for f in dropped_files for r in pq.read_table(f).to_pylist()])
    else:
        lines.append("\n(no dropped documents kept: run the stage with --keep-dropped to see them)")
    return "\n".join(lines)
