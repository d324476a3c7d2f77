"""Export the tiktoken tokenizer as a Hugging Face tokenizer.json that gives identical ids (plain JSON: no
dependency on the `tokenizers` package, which only the tests use to check the file)."""

import json
from itertools import pairwise
from pathlib import Path

from chatforge.tokenizer.bpe import Tokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable char table: tokenizer.json stores byte-level tokens as strings in this alphabet."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + n)
    return table


def last_merge(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The pair tiktoken merges last when it encodes `token` on its own, or None if it never reaches `token`.
    Any token tiktoken builds inside a longer piece is built by exactly this merge (merges never cross its
    boundary), so one merge rule per token reproduces tiktoken. Running with the full vocabulary rather than only
    lower ranks also covers the rare token whose final pair includes a higher-ranked part."""
    parts = [bytes([b]) for b in token]
    pair = None
    while len(parts) > 1:
        pairs = [(ranks[a + b], i) for i, (a, b) in enumerate(pairwise(parts)) if a + b in ranks]
        if not pairs:
            return None  # only reachable as a whole pre-token, which ignore_merges handles
        _, i = min(pairs)  # lowest rank, leftmost on ties: tiktoken's order
        pair = parts[i], parts[i + 1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return pair


def hf_tokenizer_json(tok: Tokenizer) -> dict:
    ranks: dict[bytes, int] = tok.enc._mergeable_ranks
    byte_char = bytes_to_unicode()
    to_str = lambda b: "".join(byte_char[x] for x in b)
    vocab = {to_str(token): rank for token, rank in ranks.items()}  # ids are ranks; bytes 0..255 need not be in order
    merges = []
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):  # list position is merge priority, as rank is
        pair = last_merge(ranks, token) if len(token) > 1 else None
        if pair is not None:
            merges.append(f"{to_str(pair[0])} {to_str(pair[1])}")  # byte-level strings never contain a space
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for name, i in sorted(tok.enc._special_tokens.items(),
                                                                          key=lambda kv: kv[1])]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        # Our regex does the splitting (onig accepts its possessive quantifiers); ByteLevel then only maps bytes.
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.enc._pat_str}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        "post_processor": None,  # no BOS: like tok.encode, callers add <|endoftext|> themselves
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            # tiktoken returns a pre-token found whole in the vocab without merging (as Llama 3's export does)
            "ignore_merges": True,
            "vocab": vocab, "merges": merges,
        },
    }


def save_hf_tokenizer(tok: Tokenizer, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(hf_tokenizer_json(tok), ensure_ascii=False) + "\n", encoding="utf-8")
