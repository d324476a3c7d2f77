"""Synthetic pages that repeat spans of words and numbers, mixed into pretraining so the base model learns to copy.

Copying what the context holds (induction heads, Olsson et al. 2022) is what SFT's tool calls, documents in the
prompt and search results all need, and a small model on a few million tokens of news and plays had not learnt it:
on tiny, mixing these pages in (12% of the tokens) took the calculator call's operand copy from 0.02 to 0.80 and
the held-out 2-digit arithmetic with steps from 0.03 to 0.63 after the same SFT (docs/benchmarks.md).
A page repeats each span once or twice in one of a few frames, with unrelated words between, so the only way to
predict the repeat is to find the first occurrence.
"""

import random

FRAMES = ['{s}. {f}. Again: {s}.', 'Note "{s}" - {f} - repeated "{s}".', '{s} = {s}', 'Q: {s}? {f} A: {s}',
          '{f} ({s}) and so ({s})', 'Code {s}, {f}, code {s}, confirmed {s}.']
SEED = 20221208


def number(rng: random.Random) -> str:
    """1-4 digits, half of them with thousands commas (as the calculator task writes them)."""
    digits = rng.randint(1, 4)
    n = rng.randint(10 ** (digits - 1), 10**digits - 1)
    return f"{n:,}" if rng.random() < 0.5 else str(n)


def documents(n: int, words: list[str]) -> list[tuple[str, str]]:
    """n (id, text) pages of 3-6 repeated spans of 2-7 items drawn from `words` (70%) and numbers."""
    if not words:
        raise ValueError("copy pages need a vocabulary: no words in the kept documents")
    rng = random.Random(SEED)
    out = []
    for i in range(n):
        parts = []
        for _ in range(rng.randint(3, 6)):
            span = " ".join(rng.choice(words) if rng.random() < 0.7 else number(rng) for _ in range(rng.randint(2, 7)))
            filler = " ".join(rng.choice(words) for _ in range(rng.randint(0, 12)))
            parts.append(rng.choice(FRAMES).format(s=span, f=filler))
        out.append((f"copy/{i:05d}", " ".join(parts)))
    return out


def vocabulary(texts: list[str]) -> list[str]:
    """Lower-cased alphabetic words of 3-11 letters from `texts`, sorted (the same texts give the same pages)."""
    found = {w.strip('.,;:!?"\'()').lower() for t in texts for w in t.split()}
    return sorted(w for w in found if w.isalpha() and 2 < len(w) < 12)
