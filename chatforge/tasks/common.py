"""What every task shares: the Task interface, a seeded random source per split, and reading the
answer out of a reply.

A task makes conversations for a split, "train" or "test", and checks a reply. An example is a dict
with OpenAI-style `messages` (the last one the assistant's reference answer, with chatforge's parts
for think/tool calls, tokenizer/chat.py) and whatever its checker needs next to them (e.g. `answer`).
The two splits are disjoint by construction (their own phrasings, numbers, entities), not only by
seed, so a score on "test" measures generalisation. SFT trains on "train" and validates on "test"; RL practises
on `Task.rl_split` and is scored on "test" with the same `score`. A task may have a third split, "practice":
RL prompts phrased as neither SFT's nor the test's are, so practice on them is practice at new phrasings.
"""

import random
import re
import zlib

from chatforge.config import Config

SPLITS = ("train", "test")
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


class Task:
    """A named source of conversations with a verifier; subclasses set `name` and define both methods."""

    name = ""
    rl_split = "train"  # the split RL practises on: "practice" where the task has one

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        """n examples of `split`, the same for the same seed; `config` holds any settings (e.g. sft.identity)."""
        raise NotImplementedError

    def score(self, example: dict, reply: str | list[dict]) -> float:
        """How right `reply` (the assistant's content, text or parts) is for `example`: 0..1."""
        raise NotImplementedError

    def metrics(self, example: dict, reply: str | list[dict]) -> dict[str, float]:
        """The figures this reply adds to `chatforge eval chat`, each a value in 0..1 averaged over the examples
        that report it: by default the score under the example's `metric` key (e.g. "benign_refusal"; a rate
        where lower is better is fine), else under "<task>_acc". A task may add more (e.g. a tool call's copy
        accuracy)."""
        return {example.get("metric", f"{self.name}_acc"): self.score(example, reply)}


def split_rng(task: str, split: str, seed: int) -> random.Random:
    """A random source per task, split and seed (a str seed is hashed with SHA-512: stable across runs)."""
    if split not in (*SPLITS, "practice"):
        raise ValueError(f"split must be one of {', '.join(SPLITS)} or practice, got {split!r}")
    return random.Random(f"{task}/{split}/{seed}")


def hash_split(key: str, test_share: int) -> str:
    """"test" for one key in `test_share` (by a crc32 of the key), else "train": an item (an operand pair, a word,
    a name) belongs to one split whatever the seed, so held-out questions are never training questions."""
    return "test" if zlib.crc32(key.encode()) % test_share == 0 else "train"


def reply_text(reply: str | list[dict]) -> str:
    """The answer text of a reply: its text parts, without reasoning, tool calls or tool outputs."""
    return reply if isinstance(reply, str) else "".join(p["text"] for p in reply if p["type"] == "text")


def last_number(text: str) -> float | None:
    """The last number in `text` (1,024 reads as 1024), or None."""
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None
