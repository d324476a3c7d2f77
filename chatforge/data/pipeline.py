"""Documents → clean, deduplicated, split parquet parts with FineWeb's columns, plus stats.json.

Steps, in order, each counting what it drops: Unicode/whitespace normalisation, Project Gutenberg
boilerplate strip, a minimum-length rule, exact deduplication (hash of the normalised text).
The train/val split hashes the document id, so it does not depend on order or on other documents.
"""

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from chatforge.data.readers import Document

SCHEMA = pa.schema([
    ("text", pa.string()), ("id", pa.string()), ("url", pa.string()), ("dump", pa.string()),
    ("date", pa.string()), ("file_path", pa.string()), ("language", pa.string()),
    ("language_score", pa.float64()),
])
MIN_CHARS = 200

_BLANK_RUNS = re.compile(r"\n{3,}")
_TRAILING_WS = re.compile(r"[ \t]+\n")
# Gutenberg wraps texts in "*** START OF THE/THIS PROJECT GUTENBERG EBOOK ... ***" / "*** END OF ...";
# older files use "*END*THE SMALL PRINT!" before the text and "End of (the) Project Gutenberg..." after.
_GUT_START = re.compile(r"^.*(\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG|\*END\*THE SMALL PRINT).*$",
                        re.IGNORECASE | re.MULTILINE)
_GUT_END = re.compile(r"^.*(\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
                      re.IGNORECASE | re.MULTILINE)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_WS.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def strip_gutenberg(text: str) -> str:
    if m := _GUT_START.search(text):
        text = text[m.end():]
    if m := _GUT_END.search(text):
        text = text[: m.start()]
    return text


def is_val(doc_id: str, val_fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little")
    return h % 1_000_000 < val_fraction * 1_000_000


def clean(docs: Iterable[Document], stats: Counter) -> Iterator[Document]:
    seen: set[bytes] = set()
    for doc in docs:
        stats["docs_in"] += 1
        stats["bytes_in"] += len(doc.text.encode())
        text = normalise(strip_gutenberg(doc.text))
        if len(text) < MIN_CHARS:
            stats["dropped_too_short"] += 1
            continue
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            stats["dropped_exact_duplicate"] += 1
            continue
        seen.add(digest)
        doc.text = text
        stats["docs_out"] += 1
        stats["bytes_out"] += len(text.encode())
        yield doc


class PartWriter:
    """Writes `prefix-00000.parquet`, ... of at most `per_part` documents each."""

    def __init__(self, out_dir: Path, per_part: int):
        self.out_dir, self.per_part = Path(out_dir), per_part
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.parts = 0
        self.docs = 0

    def add(self, doc: Document) -> None:
        self.rows.append(asdict(doc))
        if len(self.rows) >= self.per_part:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.parts:
            return
        table = pa.Table.from_pylist(self.rows, schema=SCHEMA)
        path = self.out_dir / f"part-{self.parts:05d}.parquet"
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        self.docs += len(self.rows)
        self.parts += 1
        self.rows = []


def run_pipeline(docs: Iterable[Document], out_dir: Path, val_fraction: float, docs_per_part: int,
                 stats: Counter) -> dict:
    out_dir = Path(out_dir)
    for old in out_dir.glob("*/part-*.parquet"):  # a redo must not leave parts of an earlier run behind
        old.unlink()
    writers = {split: PartWriter(out_dir / split, docs_per_part) for split in ("train", "val")}
    for doc in clean(tqdm(docs, desc="data", unit="doc"), stats):
        writers["val" if is_val(doc.id, val_fraction) else "train"].add(doc)
    for w in writers.values():
        w.flush()
    stats["train_docs"], stats["val_docs"] = writers["train"].docs, writers["val"].docs
    return dict(stats)


def read_parts(split_dir: Path, columns: list[str] | None = None) -> Iterator[dict]:
    """Rows of every part in a split directory, in part order."""
    paths = sorted(Path(split_dir).glob("part-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"no parquet parts in {split_dir}")
    for path in paths:
        yield from pq.read_table(path, columns=columns).to_pylist()


def build_sample_corpus(run, resume: bool = False) -> dict:
    """The `data` stage: the built-in sample corpus → runs/NAME/data/{train,val}/part-*.parquet.
    Seconds of work, so an interrupted run is redone whole (`resume` is ignored)."""
    from chatforge.data.samples import sample_corpus
    from chatforge.runs import write_json

    cfg = run.config.data
    stats: Counter = Counter()
    docs: Iterable[Document] = sample_corpus(stats)
    if cfg.max_docs:  # a deterministic subset that draws from every source, not just the first one
        docs = sorted(docs, key=lambda d: hashlib.blake2b(d.id.encode(), digest_size=8).digest())[: cfg.max_docs]
    out = run_pipeline(docs, run.path / "data", cfg.val_fraction, cfg.docs_per_part, stats)
    write_json(run.path / "data" / "stats.json", out)
    print(f"data: {out['docs_in']} documents in, {out['train_docs']} train + {out['val_docs']} val kept "
          f"({out.get('dropped_exact_duplicate', 0)} exact duplicates, {out.get('dropped_too_short', 0)} too short)")
    return out
