"""Bits per byte: cross-entropy summed over target tokens / (ln 2 * their UTF-8 bytes). Unlike loss
per token it does not depend on the vocabulary, so it compares tokenizers, models and baselines.
Special tokens (BOS, chat tokens) have no bytes and are left out of both sums."""

import math

import numpy as np
import torch

from chatforge.errors import UserError
from chatforge.model.gpt import GPT
from chatforge.model.precision import autocast
from chatforge.tokenizer.shards import TokenShards


@torch.no_grad()
def evaluate_bpb(model: GPT, val: TokenShards, byte_lengths: torch.Tensor, batch_size: int, max_tokens: int,
                 device: str = "cpu", dtype: torch.dtype | None = None) -> float:
    was_training = model.training
    model.eval()
    nats, n_bytes = 0.0, 0
    byte_lengths = byte_lengths.to(device)
    for x, y in val.windows(batch_size, model.cfg.seq_len, max_tokens):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        with autocast(device, dtype):
            loss = model(x, y, reduction="none").view(-1)
        nb = byte_lengths[y.reshape(-1)]
        nats += (loss * (nb > 0)).sum().item()
        n_bytes += nb.sum().item()
    model.train(was_training)
    if n_bytes == 0:
        raise UserError("the validation split has no tokens to evaluate; is it empty?")
    return nats / (math.log(2) * n_bytes)


def unigram_bpb(train: TokenShards, val: TokenShards, byte_lengths: np.ndarray, seq_len: int,
                max_tokens: int) -> float:
    """The baseline a model must beat: each token predicted by its train-split frequency
    (add-one smoothed), scored on the same validation targets as evaluate_bpb."""
    vocab = len(byte_lengths)
    counts = np.ones(vocab, dtype=np.float64)
    for shard in train.shards:
        counts += np.bincount(np.asarray(shard), minlength=vocab)[:vocab]
    logp = np.log(counts / counts.sum())
    nats, n_bytes = 0.0, 0
    for _, y in val.windows(64, seq_len, max_tokens):
        nb = byte_lengths[y.reshape(-1)]
        nats -= (logp[y.reshape(-1)] * (nb > 0)).sum()
        n_bytes += nb.sum()
    return float(nats / (math.log(2) * n_bytes))
