"""Generation: prefill the prompt into a KV cache, then sample one token at a time with
temperature and top-k. Tokenizer.decode_stream turns the ids into streamed text."""

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from chatforge.model.gpt import GPT, KVCache


@dataclass
class GenStats:
    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft: float = 0.0  # seconds to the first new token
    seconds: float = 0.0
    stop_reason: str = ""

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def sample(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> int:
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def generate(model: GPT, prompt: list[int], max_new_tokens: int = 256, temperature: float = 0.8, top_k: int = 50,
             stop_ids: tuple[int, ...] = (), seed: int | None = None,
             stats: GenStats | None = None) -> Iterator[int]:
    """Yield new token ids; stops at a stop id (not yielded), max_new_tokens or the context length."""
    if not prompt:
        raise ValueError("the prompt is empty")
    if temperature < 0 or top_k < 0:
        raise ValueError(f"temperature and top_k must be >= 0 (got {temperature}, {top_k})")
    limit = model.cfg.seq_len
    if len(prompt) >= limit:
        raise ValueError(f"the prompt has {len(prompt)} tokens; the model's context is {limit}")
    max_new_tokens = min(max_new_tokens, limit - len(prompt))
    stats = stats if stats is not None else GenStats()
    stats.prompt_tokens = len(prompt)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    model.eval()
    cache = KVCache(model.cfg, 1, len(prompt) + max_new_tokens, device=device)
    t0 = time.time()
    logits = model(torch.tensor([prompt], device=device), cache=cache)[0, -1]
    stats.stop_reason = "length"
    for i in range(max_new_tokens):
        token = sample(logits, temperature, top_k, generator)
        if i == 0:
            stats.ttft = time.time() - t0
        if token in stop_ids:
            stats.stop_reason = "stop"
            break
        stats.new_tokens += 1
        stats.seconds = time.time() - t0
        yield token
        if i + 1 < max_new_tokens:
            logits = model(torch.tensor([[token]], device=device), cache=cache)[0, -1]
    stats.seconds = time.time() - t0

