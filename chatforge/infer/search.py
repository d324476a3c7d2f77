"""Search for <|search_start|> query <|search_end|> calls: BM25 over the run's cleaned corpus
(offline, `chatforge data index`), or a SearXNG-style JSON API over HTTP (`--search-url`).

Documents are cut into passages of ~120 words, so a hit pastes a paragraph into the model's small
context rather than a whole article; each passage keeps its document's id and url. BM25 is
bm25s (sparse-matrix scoring, DESIGN.md §4).
"""

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PASSAGE_WORDS = 120


@dataclass
class Passage:
    doc_id: str
    url: str
    text: str
    score: float


def split_passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """Consecutive runs of about `words` words, breaking at paragraph ends where one is near."""
    out, current = [], []
    for para in re.split(r"\n\s*\n", text):
        tokens = para.split()
        while tokens:
            take = tokens[: words - len(current)]
            current += take
            tokens = tokens[len(take) :]
            if len(current) >= words:
                out.append(" ".join(current))
                current = []
        if len(current) >= words // 2:  # a paragraph end close enough to the target: break here
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def _terms(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def build_index(data_dir: Path, out_dir: Path, words: int = PASSAGE_WORDS) -> dict:
    """BM25 over every passage of data/{train,val}/part-*.parquet → out_dir (bm25s files + passages.parquet)."""
    import bm25s
    from tqdm import tqdm

    from chatforge.data.pipeline import read_parts

    rows = {"text": [], "doc_id": [], "url": []}
    for split in ("train", "val"):
        if not list((Path(data_dir) / split).glob("part-*.parquet")):
            continue
        for doc in tqdm(read_parts(Path(data_dir) / split, ["text", "id", "url"]), desc=f"index {split}", unit="doc"):
            for passage in split_passages(doc["text"], words):
                rows["text"].append(passage)
                rows["doc_id"].append(doc["id"])
                rows["url"].append(doc.get("url") or "")
    if not rows["text"]:
        raise FileNotFoundError(f"no documents in {data_dir}/{{train,val}}; run `chatforge data` first")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    retriever = bm25s.BM25()
    retriever.index(_terms(rows["text"]), show_progress=False)
    retriever.save(str(out_dir / "bm25"), show_progress=False)
    pq.write_table(pa.table(rows), out_dir / "passages.parquet")
    return {"documents": len(set(rows["doc_id"])), "passages": len(rows["text"])}


class LocalSearch:
    """A BM25 index written by build_index."""

    def __init__(self, index_dir: Path):
        import bm25s

        index_dir = Path(index_dir)
        if not (index_dir / "passages.parquet").exists():
            raise FileNotFoundError(f"no search index at {index_dir}; run `chatforge data index` first")
        self.retriever = bm25s.BM25.load(str(index_dir / "bm25"), show_progress=False)
        self.passages = pq.read_table(index_dir / "passages.parquet").to_pydict()

    def search(self, query: str, k: int = 3) -> list[Passage]:
        terms = [t for t in _terms([query])[0] if t in self.retriever.vocab_dict]
        if not terms:
            return []
        k = min(k, len(self.passages["text"]))
        ids, scores = self.retriever.retrieve([terms], k=k, show_progress=False)
        return [Passage(self.passages["doc_id"][i], self.passages["url"][i], self.passages["text"][i], float(s))
                for i, s in zip(ids[0], scores[0], strict=True) if s > 0]


class HttpSearch:
    """A SearXNG-style API: GET {url}?q=QUERY&format=json → {"results": [{"url", "title", "content"}, ...]}."""

    def __init__(self, url: str, timeout: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"search url must start with http:// or https:// (got {url!r})")
        self.url, self.timeout = url, timeout

    def search(self, query: str, k: int = 3) -> list[Passage]:
        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}{urllib.parse.urlencode({'q': query, 'format': 'json'})}"
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            data = json.load(response)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise ValueError('the server did not answer with {"results": [...]}')
        results = [r for r in results if isinstance(r, dict)][:k]
        return [Passage(str(r.get("url", "")), str(r.get("url", "")), f"{r.get('title', '')}: {r.get('content', '')}",
                        float(r.get("score", 0.0))) for r in results]


def format_results(passages: list[Passage], chars: int = 600) -> str:
    """What the model reads: one numbered line per passage with its document id."""
    if not passages:
        return "no results"
    return "\n".join(f"[{i}] ({p.doc_id}) {p.text[:chars]}" for i, p in enumerate(passages, 1))
