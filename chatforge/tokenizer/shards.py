"""Token shards: documents → `.bin` files (a 64-byte header, then uint16/uint32 tokens), read back
memory-mapped. Every document starts with <|endoftext|> (BOS), so windows can cross documents and
the model still sees where each begins."""

import multiprocessing as mp
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from pathlib import Path

import numpy as np
from tqdm import tqdm

from chatforge.data.facts import DIRECTORY_ID
from chatforge.errors import UserError
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer, train_tokenizer
from chatforge.tokenizer.hf import load_hf_tokenizer, save_hf_tokenizer

MAGIC = b"CFTOKENS"
VERSION = 1
HEADER = struct.Struct("<8sIIQ40x")  # magic, version, bytes per token, token count; padded to 64 bytes
assert HEADER.size == 64


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def write_shard(path: Path, tokens: np.ndarray) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, tokens.dtype.itemsize, len(tokens)))
        f.write(tokens.tobytes())
    tmp.replace(path)


def read_shard(path: Path) -> np.memmap:
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(HEADER.size)
    if len(head) < HEADER.size:
        raise UserError(f"{path}: truncated token shard header ({len(head)} of {HEADER.size} bytes)")
    magic, version, itemsize, count = HEADER.unpack(head)
    if magic != MAGIC or version != VERSION or itemsize not in (2, 4):
        raise UserError(f"{path}: not a chatforge token shard (magic={magic!r} version={version} "
                        f"itemsize={itemsize})")
    expected = HEADER.size + count * itemsize
    if path.stat().st_size != expected:
        raise UserError(f"{path}: header says {count} tokens ({expected} bytes) but the file has "
                        f"{path.stat().st_size} bytes")
    dtype = np.uint16 if itemsize == 2 else np.uint32
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(count,))


def pack_documents(docs: Iterable[Sequence[int]], bos_id: int, dtype) -> np.ndarray:
    """Documents' ids → one array with BOS before each document."""
    docs = list(docs)
    out = np.empty(sum(len(d) for d in docs) + len(docs), dtype=dtype)
    i = 0
    for ids in docs:
        out[i] = bos_id
        out[i + 1 : i + 1 + len(ids)] = ids
        i += len(ids) + 1
    return out


def write_shards(chunks: Iterable[np.ndarray], out_dir: Path, split: str, bos_id: int,
                 shard_tokens: int = 100_000_000) -> dict:
    """Write packed chunks (see pack_documents) as `{split}_000.bin`, ... of about `shard_tokens`
    tokens each, cut between chunks; returns counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{split}_*.bin"):
        old.unlink()
    buf: list[np.ndarray] = []
    n_buf = n_total = n_docs = shard = 0
    dtype = np.uint16

    def flush():
        nonlocal buf, n_buf, shard
        write_shard(out_dir / f"{split}_{shard:03d}.bin", np.concatenate(buf) if buf else np.zeros(0, dtype))
        buf, n_buf, shard = [], 0, shard + 1

    for arr in chunks:
        dtype = arr.dtype
        buf.append(arr)
        n_buf += len(arr)
        n_total += len(arr)
        n_docs += int(np.count_nonzero(arr == bos_id))
        if n_buf >= shard_tokens:
            flush()
    if buf or shard == 0:
        flush()
    return {"docs": n_docs, "tokens": n_total, "shards": shard}


# Text per encoding task: ~250k tokens, small enough that 2 workers stay balanced on the 14 MB sample
# corpus, large enough that pickling a task (~2 ms) is noise next to encoding it (~0.5 s).
CHUNK_BYTES = 1 << 20
_worker_tokenizer = None


def _init_worker(tok_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(Path(tok_dir))


def _encode_chunk(texts: list[str]) -> np.ndarray:
    return encode_chunk(_worker_tokenizer, texts)


def encode_chunk(tok: Tokenizer, texts: list[str]) -> np.ndarray:
    return pack_documents([tok.encode_array(t) for t in texts], tok.bos_id, token_dtype(tok.vocab_size))


def _text_chunks(texts: Iterable[str], counts: dict) -> Iterator[list[str]]:
    chunk, size = [], 0
    for text in texts:
        n = len(text.encode("utf-8", "surrogatepass"))
        chunk.append(text)
        size += n
        counts["bytes"] += n
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _ordered_map(pool, fn, items: Iterable, depth: int) -> Iterator:
    """Pool.imap, but reading at most `depth` items ahead (imap drains its input into memory)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= depth:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def encode_to_shards(texts: Iterable[str], tok_dir: Path, out_dir: Path, split: str, workers: int = 1,
                     shard_tokens: int = 100_000_000, progress: bool = True) -> dict:
    """Encode documents with `workers` processes (each single-threaded) into token shards. The
    output does not depend on `workers`: chunks are cut by bytes and written in input order."""
    tok = load_tokenizer(tok_dir)
    counts = {"bytes": 0}
    chunks = _text_chunks(texts, counts)
    head = list(islice(chunks, 2 * workers))  # a split this small encodes faster than workers start
    bar = tqdm(desc=f"tokenize {split}", unit="doc", disable=not progress)
    pool = None
    if workers > 1 and len(head) == 2 * workers:
        # spawn, not fork: the parent may hold torch/OpenMP threads, and fork copies them half-alive
        pool = mp.get_context("spawn").Pool(workers, _init_worker, (str(tok_dir),))
        encoded = _ordered_map(pool, _encode_chunk, chain(head, chunks), 2 * workers)
    else:
        encoded = (encode_chunk(tok, c) for c in chain(head, chunks))

    def counted() -> Iterator[np.ndarray]:
        for arr in encoded:
            bar.update(int(np.count_nonzero(arr == tok.bos_id)))
            yield arr

    try:
        out = write_shards(counted(), out_dir, split, tok.bos_id, shard_tokens)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return out | counts


def row_position(step: int, micro: int, grad_accum: int, batch_size: int, rank: int = 0, world: int = 1) -> int:
    """Where in the training order a (step, micro-batch, DDP rank) reads: ranks interleave, so
    `world` processes at batch B see exactly the rows one process at batch world*B would."""
    return ((step * grad_accum + micro) * world + rank) * batch_size


class TokenShards:
    """All shards of one split: training rows in a shuffled, document-aligned order, and
    consecutive validation windows."""

    def __init__(self, tok_dir: Path, split: str):
        paths = sorted(Path(tok_dir).glob(f"{split}_*.bin"))
        if not paths:
            raise UserError(f"no {split} token shards in {tok_dir}; run `chatforge tokenizer` first")
        self.shards = [read_shard(p) for p in paths]
        self._grid: tuple[int, int, np.ndarray] | None = None
        self._perm: tuple[int, np.ndarray] | None = None

    def grid(self, seq_len: int, bos_id: int) -> np.ndarray:
        """Window starts, as (shard, offset) rows: every document's BOS, then every seq_len tokens
        inside documents longer than a window. Rows start where documents start (BOS-aligned), yet
        a 40k-token play is still covered end to end rather than cropped to its first window."""
        if self._grid is not None and self._grid[:2] == (seq_len, bos_id):
            return self._grid[2]
        rows = []
        for k, shard in enumerate(self.shards):
            last = len(shard) - seq_len - 1  # the last offset with a full window + target
            if last < 0:
                continue
            bos = np.flatnonzero(np.asarray(shard) == bos_id)
            if len(bos) == 0 or bos[0] != 0:
                bos = np.concatenate([[0], bos])  # text before the first BOS still gets windows
            lengths = np.diff(np.append(bos, len(shard)))
            per_doc = -(-lengths // seq_len)
            within = np.arange(per_doc.sum()) - np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
            starts = np.unique(np.minimum(np.repeat(bos, per_doc) + within * seq_len, last))
            rows.append(np.stack([np.full(len(starts), k), starts], axis=1))
        if not rows:
            raise UserError(f"every shard is shorter than seq_len+1={seq_len + 1} tokens")
        grid = np.concatenate(rows)
        self._grid = (seq_len, bos_id, grid)
        return grid

    def batch(self, seed: int, position: int, batch_size: int, seq_len: int,
              bos_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows position .. position+batch_size-1 of the training order: inputs and next-token targets
        (B, T) as int64. Each epoch visits every grid window once, in an order fixed by (seed, epoch),
        so a row depends only on its position: resuming needs nothing but the position, and DDP ranks
        take disjoint positions."""
        grid = self.grid(seq_len, bos_id)
        out = np.empty((batch_size, seq_len + 1), dtype=np.int64)
        for r in range(batch_size):
            epoch, j = divmod(position + r, len(grid))
            if self._perm is None or self._perm[0] != epoch:
                self._perm = (epoch, np.random.default_rng([seed, epoch]).permutation(len(grid)))
            k, start = grid[self._perm[1][j]]
            out[r] = self.shards[k][start : start + seq_len + 1]
        return out[:, :-1], out[:, 1:]

    def windows(self, batch_size: int, seq_len: int, max_tokens: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Consecutive non-overlapping windows from the start of the split, up to max_tokens targets."""
        rows, seen = [], 0
        for shard in self.shards:
            for start in range(0, len(shard) - seq_len, seq_len):
                if seen >= max_tokens:
                    break
                rows.append(np.asarray(shard[start : start + seq_len + 1], dtype=np.int64))
                seen += seq_len
                if len(rows) == batch_size:
                    arr = np.stack(rows)
                    yield arr[:, :-1], arr[:, 1:]
                    rows = []
        if rows:
            arr = np.stack(rows)
            yield arr[:, :-1], arr[:, 1:]


def build_tokenizer_and_shards(run, resume: bool = False) -> dict:
    """The `tokenizer` stage: train BPE on the train split, then write train and val token shards.
    Seconds of work at sample scale, so an interrupted run is redone whole (`resume` is ignored)."""
    from chatforge.data.pipeline import read_parts

    cfg = run.config.tokenizer
    data_dir = run.path / "data"

    def texts(split: str) -> Iterator[str]:
        return (r["text"] for r in read_parts(data_dir / split, ["text"]))

    def tokenizer_texts() -> Iterator[str]:
        # not the directory pages (data.directory_pages): 2,000 lists of the same 64 names bought tiny's vocabulary 356
        # merges for names
        return (r["text"] for r in read_parts(data_dir / "train") if not (r.get("id") or "").startswith(DIRECTORY_ID))

    if next(texts("train"), None) is None:
        raise UserError(f"{data_dir / 'train'} has no documents to train the tokenizer on: "
                        f"check the data stage's stats.json")
    if cfg.from_dir:  # e.g. the tokenizer of the run whose checkpoint pretrain.init_from continues
        src = Path(cfg.from_dir)  # ours (tokenizer.tiktoken) or a Hugging Face model's (only tokenizer.json)
        hf = (src / "tokenizer.json").exists() and not (src / "tokenizer.tiktoken").exists()
        tok = load_hf_tokenizer(src) if hf else load_tokenizer(src)
        if tok.vocab_size != cfg.vocab_size:  # the model's embedding size follows tokenizer.vocab_size
            raise UserError(f"{cfg.from_dir} has a vocabulary of {tok.vocab_size}; add "
                            f"--tokenizer.vocab_size={tok.vocab_size}")
    else:
        try:
            tok = train_tokenizer(tokenizer_texts(), cfg.vocab_size)
        except ValueError as e:
            raise UserError(f"{data_dir / 'train'}: {e}") from None
    tok.save(run.path / "tokenizer")
    save_hf_tokenizer(tok, run.path / "tokenizer" / "tokenizer.json")
    workers = cfg.workers or os.cpu_count() or 1
    out: dict = {"vocab_size": tok.vocab_size}
    for split in ("train", "val"):
        counts = encode_to_shards(texts(split), run.path / "tokenizer", run.path / "tokens", split, workers)
        out[f"{split}_tokens"] = counts["tokens"]
        out[f"{split}_bytes_per_token"] = round(counts["bytes"] / max(counts["tokens"] - counts["docs"], 1), 3)
    print(f"tokenizer: vocab {tok.vocab_size}, {out['train_tokens']:,} train / {out['val_tokens']:,} val tokens, "
          f"{out['val_bytes_per_token']} bytes/token on val")
    return out
