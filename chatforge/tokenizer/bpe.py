"""Byte-level BPE: trained with rustbpe, encoded with tiktoken (nanochat's split; the fastest
measured here), saved as a tiktoken rank file plus the special tokens of docs/design.md's chat format."""

import base64
import codecs
import json
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import rustbpe
import tiktoken

from chatforge.errors import UserError

# GPT-4's (cl100k) split pattern, which is also Llama 3's.
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|"""
                 r"""\s*[\r\n]|\s+(?!\S)|\s+""")
SPECIAL_TOKENS = [
    "<|endoftext|>",  # document boundary; also BOS
    "<|im_start|>", "<|im_sep|>", "<|im_end|>",  # chat turns
    "<|python_start|>", "<|python_end|>", "<|search_start|>", "<|search_end|>",  # tool calls
    "<|output_start|>", "<|output_end|>",  # tool output, pasted in by the runtime
    "<think>", "</think>",  # reasoning spans
]


class Tokenizer:
    def __init__(self, enc: tiktoken.Encoding):
        self.enc = enc
        self.bos_id = enc.encode_single_token("<|endoftext|>")

    @property
    def vocab_size(self) -> int:
        return self.enc.n_vocab

    def encode(self, text: str) -> list[int]:
        """Ordinary text: strings that look like special tokens stay plain bytes (docs/design.md)."""
        return self.enc.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        """`encode` as a uint32 array, built without a Python int per token (bulk encoding's speed)."""
        try:
            return self.enc.encode_to_numpy(text, disallowed_special=())  # nothing allowed: specials stay text
        except UnicodeEncodeError:  # lone surrogates: encode_ordinary replaces them with U+FFFD
            return np.array(self.enc.encode_ordinary(text), dtype=np.uint32)

    def encode_batch(self, texts: list[str], num_threads: int = 8) -> list[np.ndarray]:
        """Arrays, one per text. Threads overlap because tiktoken releases the GIL while it encodes; with
        no int lists to build under the GIL, a warm process encodes bench/tokenizer.py's 73 MB at 20.5
        MB/s on 2 threads vs 16.3-19.1 for tiktoken's encode_ordinary_batch (both ~16 on a first pass)."""
        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(self.encode_array, texts))

    def special(self, name: str) -> int:
        if name not in self.enc.special_tokens_set:  # e.g. a tokenizer imported from HF has no chat/tool tokens
            raise UserError(f"the tokenizer has no {name} token: chat and tools need chatforge's special tokens "
                            f"({', '.join(SPECIAL_TOKENS[1:])}); retrain it, or use one from a chatforge run")
        return self.enc.encode_single_token(name)

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))

    def decode_stream(self, ids: Iterable[int]) -> Iterator[str]:
        """Text pieces, one per token that completes characters: bytes of a character split across
        tokens wait for the rest, so streamed text never shows half a character."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in ids:
            if piece := decoder.decode(self.enc.decode_single_token_bytes(i)):
                yield piece
        if tail := decoder.decode(b"", final=True):
            yield tail

    def token_bytes(self, token_id: int) -> bytes:
        return self.enc.decode_single_token_bytes(token_id)

    def byte_lengths(self) -> list[int]:
        """Bytes per token id, 0 for special tokens: the denominator of bits per byte."""
        specials = set(self.enc._special_tokens.values())
        return [0 if i in specials else len(self.enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)]

    def save(self, out_dir: Path) -> None:
        """tokenizer.tiktoken (ranks) and special_tokens.json (+ split pattern); hf.save_hf_tokenizer writes the
        same ids as a Hugging Face tokenizer.json."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        ranks = sorted(self.enc._mergeable_ranks.items(), key=lambda kv: kv[1])
        lines = [f"{base64.b64encode(tok).decode()} {rank}\n" for tok, rank in ranks]
        (out_dir / "tokenizer.tiktoken").write_text("".join(lines))
        meta = {"pattern": self.enc._pat_str, "special_tokens": self.enc._special_tokens}
        (out_dir / "special_tokens.json").write_text(json.dumps(meta, indent=2) + "\n")


def _encoding(ranks: dict[bytes, int], pattern: str) -> tiktoken.Encoding:
    specials = {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name="chatforge", pat_str=pattern, mergeable_ranks=ranks, special_tokens=specials)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train on an iterator of texts; `vocab_size` counts the 256 bytes and the special tokens."""
    n_merged = vocab_size - len(SPECIAL_TOKENS)
    if n_merged < 256:
        raise UserError(f"vocab_size={vocab_size} is too small: need at least 256 byte tokens + "
                        f"{len(SPECIAL_TOKENS)} special tokens = {256 + len(SPECIAL_TOKENS)}")
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(iter(texts), n_merged, pattern=SPLIT_PATTERN)
    ranks = {bytes(tok): rank for tok, rank in bpe.get_mergeable_ranks()}
    if len(ranks) < n_merged:
        raise UserError(f"the corpus only supports {len(ranks)} merges + bytes, fewer than the "
                        f"{n_merged} asked for: lower tokenizer.vocab_size or give more text")
    return Tokenizer(_encoding(ranks, SPLIT_PATTERN))


def load_tokenizer(tok_dir: Path) -> Tokenizer:
    tok_dir = Path(tok_dir)
    path = tok_dir / "tokenizer.tiktoken"
    if not path.exists():
        raise UserError(f"no tokenizer at {path}; run `chatforge tokenizer` first")
    meta = json.loads((tok_dir / "special_tokens.json").read_text())
    # read here, not with tiktoken's load_tiktoken_bpe: that caches every file under /tmp by its path string, so a
    # new tokenizer at a path used before (runs/tiny/...) loaded the old one's ranks and its shards were garbage
    ranks = {}
    for line in path.read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    enc = tiktoken.Encoding(name="chatforge", pat_str=meta["pattern"], mergeable_ranks=ranks,
                            special_tokens=meta["special_tokens"])
    return Tokenizer(enc)
