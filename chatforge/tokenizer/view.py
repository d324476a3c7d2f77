"""Looking at a tokenizer: `chatforge tokenizer show TEXT` colours each token (the Tiktokenizer view)
and `chatforge tokenizer stats` reports compression and vocabulary use on the run's token shards."""

import numpy as np
from rich.text import Text

from chatforge.tokenizer.bpe import Tokenizer
from chatforge.tokenizer.shards import TokenShards

PALETTE = ["black on cyan", "black on yellow", "black on green", "white on blue", "black on magenta"]


def show(tok: Tokenizer, text: str) -> tuple[Text, list[int]]:
    """The text with alternating background colours per token, and the ids. Tokens that split a
    multi-byte character share one colour with the token that completes it."""
    ids = tok.encode(text)
    out = Text()
    for k, piece in enumerate(tok.decode_stream(ids)):
        out.append(piece, style=PALETTE[k % len(PALETTE)])
    return out, ids


def stats(tok: Tokenizer, train: TokenShards, val: TokenShards, top: int = 10) -> dict:
    vocab = tok.vocab_size
    lengths = np.array(tok.byte_lengths())
    train_counts = sum(np.bincount(np.asarray(s), minlength=vocab)[:vocab] for s in train.shards)
    val_counts = sum(np.bincount(np.asarray(s), minlength=vocab)[:vocab] for s in val.shards)
    text_tokens = val_counts[lengths > 0].sum()
    ranked = np.argsort(-train_counts)[:top]
    return {
        "vocab_size": vocab,
        "val_bytes_per_token": round(float((val_counts * lengths).sum() / max(text_tokens, 1)), 3),
        "vocab_used_train": round(float((train_counts > 0).mean()), 4),
        "vocab_used_val": round(float((val_counts > 0).mean()), 4),
        "never_seen_in_train": int((train_counts[lengths > 0] == 0).sum()),
        "top_tokens": [(tok.token_bytes(int(i)).decode("utf-8", "replace"), int(train_counts[i])) for i in ranked],
    }
