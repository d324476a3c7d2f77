"""Few-shot in-context learning (GPT-3, Brown et al. 2020): multiple-choice tasks, each item scored with no examples
before it and with SHOTS solved items of the same task (and rule) before it. A base model that picks the task up
from its prompt scores higher with the shots.

In each family the examples show a rule that the prompt does not say: an item's choices hold the answers of all its
family's rules, so without shots the rule is a guess. From held-out (val) documents: `position` maps a list of a
document's words to its first or its last one, `neighbour` asks for the word after or before a given word of a
passage; their four choices are words of the item's own document that the tokenizer keeps whole. With one rule a
family ("the first word") was the frame's default reading: on tiny, 0-shot 0.54 with `Q:`/`A:`, 0.74 with `A =`,
0.31 with `Words:`/`Answer:`, the frame measured, not the learning (docs/benchmarks.md). From the fact corpus:
`attribute` maps a person's name to one of the person's four attributes, all four the choices. A shot never
contains the item's answer, so the shots teach the rule, not the answer.
Scoring is lm-eval's log-likelihood multiple choice (`acc`): the choice whose tokens are the most likely after the
prompt, no sampling, so the figure is stable on a small model.
"""

import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from chatforge.data import facts
from chatforge.data.pipeline import read_parts
from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT
from chatforge.model.precision import pick_device
from chatforge.runs import Run
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer

SHOTS = 5
CHOICES = 4
PASSAGE_WORDS = 10  # next_word's passage: short, so five shots and the item fit tiny's context many times over
BATCH = 64
WORD = re.compile(r"[A-Za-z]{3,}")  # the frames (Q:, A:) have no such word, so no answer is one of theirs


@dataclass(frozen=True)
class Item:
    prompt: str
    choices: tuple[str, ...]
    answer: int  # index into choices
    rule: str = ""  # an item's shots follow the same rule

    def solved(self) -> str:
        return f"{self.prompt} {self.choices[self.answer]}"


def position(rng: random.Random, text: str, whole: Callable[[str], bool]) -> Item | None:
    """Q: w1 w2 w3 w4 / A: w1 (rule "first") or w4 ("last"), the words drawn from the document in a random order,
    the choices in another."""
    words = [w for w in dict.fromkeys(w.lower() for w in WORD.findall(text)) if whole(w)]
    if len(words) < CHOICES:
        return None
    picked = rng.sample(words, CHOICES)
    rule = rng.choice(["first", "last"])
    choices = rng.sample(picked, CHOICES)
    return Item(f"Q: {' '.join(picked)}\nA:", tuple(choices), choices.index(picked[0 if rule == "first" else -1]), rule)


def neighbour(rng: random.Random, text: str, whole: Callable[[str], bool]) -> Item | None:
    """Q: a passage of PASSAGE_WORDS words / A: X, with the word after X (rule "next") or before it ("previous"),
    X once in the passage; the choices are both neighbours and two other words of the passage."""
    tokens = text.split()
    start = rng.randrange(max(1, len(tokens) - PASSAGE_WORDS + 1))
    passage = tokens[start : start + PASSAGE_WORDS]
    words = [w if WORD.fullmatch(w) and whole(w) else "" for w in passage]
    spots = [i for i in range(1, len(words) - 1) if words[i - 1] and words[i] and words[i + 1]
             and words.count(words[i]) == 1 and words[i - 1] != words[i + 1]]
    if not spots:
        return None
    i = rng.choice(spots)
    others = list(dict.fromkeys(w for w in words if w and w not in words[i - 1 : i + 2]))
    if len(others) < CHOICES - 2:
        return None
    rule = rng.choice(["next", "previous"])
    choices = [words[i + 1], words[i - 1], *rng.sample(others, CHOICES - 2)]
    rng.shuffle(choices)
    answer = words[i + 1] if rule == "next" else words[i - 1]
    return Item(f"Q: {' '.join(passage)}\nA: {words[i]}", tuple(choices), choices.index(answer), rule)


Family = Callable[[random.Random, str, Callable[[str], bool]], Item | None]  # (rng, document, whole) -> an item or None
FAMILIES: dict[str, Family] = {"position": position, "neighbour": neighbour}


def attribute_items(persons: list[facts.Person], n: int, seed: int = 0) -> list[Item]:
    """Q: a person's name / A: one of the person's four attributes (city, year, job, hobby), the item's rule; the
    four values are the choices, so only the shots say which is asked, as in a directory page (data/facts.py)."""
    rng = random.Random(f"fewshot/attribute/{seed}")
    items = []
    for p in rng.sample(persons, min(n, len(persons))):
        values = [str(getattr(p, a)) for a in facts.ATTRIBUTE_NAMES]
        rule = rng.choice(facts.ATTRIBUTE_NAMES)
        choices = rng.sample(values, CHOICES)
        items.append(Item(f"Q: {p.name}\nA:", tuple(choices), choices.index(str(getattr(p, rule))), rule))
    return items


def make_items(docs: list[str], family: str, n: int, whole: Callable[[str], bool], seed: int = 0) -> list[Item]:
    """Up to n distinct items of `family` from documents drawn at random, their choices words for which whole(word)
    holds (seeded: the same documents give the same items); a small val split gives fewer."""
    rng = random.Random(f"fewshot/{family}/{seed}")
    make, items, seen = FAMILIES[family], [], set()
    for _ in range(max(50 * n, 10_000)):
        if len(items) == n:
            break
        item = make(rng, rng.choice(docs), whole)
        if item is not None and item.prompt not in seen:
            seen.add(item.prompt)
            items.append(item)
    return items


def shot_pools(items: list[Item]) -> list[list[int]]:
    """For each item, the other items whose text does not contain its answer as a word: the shots it may have."""
    words = [{w.lower() for w in re.findall(r"\w+", it.solved())} for it in items]
    return [[j for j in range(len(items)) if j != i and it.rule == items[j].rule
             and it.choices[it.answer].lower() not in words[j]] for i, it in enumerate(items)]


def with_shots(items: list[Item], k: int = SHOTS) -> list[Item]:
    """The items that can have k shots (an answer as common as "the" in a small corpus may not)."""
    return [it for it, pool in zip(items, shot_pools(items), strict=True) if len(pool) >= k]


def prompts(items: list[Item], k: int, seed: int = 0) -> list[str]:
    """Each item's prompt after k solved shots drawn from its pool, blank-line separated."""
    rng = random.Random(f"fewshot/shots/{seed}")
    return ["".join(items[j].solved() + "\n\n" for j in rng.sample(pool, k)) + item.prompt
            for item, pool in zip(items, shot_pools(items), strict=True)]


@torch.no_grad()
def sequence_logprobs(model: GPT, rows: list[tuple[list[int], list[int]]], device: str = "cpu",
                      batch_size: int = BATCH) -> torch.Tensor:
    """log p(continuation | prompt) summed over the continuation's tokens, for each (prompt, continuation), from
    right-padded batches (causal attention: padding after a row changes none of its positions); a row too long for
    the context loses the start of its prompt."""
    was_training = model.training
    model.eval()
    out = []
    for b in range(0, len(rows), batch_size):
        seqs = [(p + c)[-model.cfg.seq_len :] for p, c in rows[b : b + batch_size]]
        lens = [len(c) for _, c in rows[b : b + batch_size]]
        width = max(len(r) for r in seqs)
        x = torch.tensor([r + [0] * (width - len(r)) for r in seqs], device=device)
        nll = F.cross_entropy(model(x)[:, :-1].float().transpose(1, 2), x[:, 1:], reduction="none")
        ends = torch.tensor([len(r) - 1 for r in seqs], device=device)  # the positions predicting the continuation
        at = torch.arange(width - 1, device=device)
        wanted = (at >= (ends - torch.tensor(lens, device=device))[:, None]) & (at < ends[:, None])
        out.append(-(nll * wanted).sum(1).cpu())
    model.train(was_training)
    return torch.cat(out)


def whole_words(tok: Tokenizer) -> Callable[[str], bool]:
    return lambda word: len(tok.encode(" " + word)) == 1


def accuracy(model: GPT, tok: Tokenizer, items: list[Item], texts: list[str], device: str = "cpu") -> float:
    """The share of items whose answer is the most likely of its choices after its prompt text: lm-eval's `acc`, the
    log-probability of each choice's tokens summed."""
    rows = [([tok.bos_id] + tok.encode(t), tok.encode(" " + c)) for item, t in zip(items, texts, strict=True)
            for c in item.choices]
    picked = sequence_logprobs(model, rows, device).view(len(items), CHOICES).argmax(1)
    return sum(int(p) == item.answer for p, item in zip(picked, items, strict=True)) / len(items)


@torch.no_grad()
def repeat_nll(model: GPT, tokens: list[int], bos: int, n: int = 32, length: int = 64, device: str = "cpu",
               seed: int = 0) -> tuple[float, float]:
    """Mean next-token loss (nats) on the first and the second copy of n sequences of `length` distinct tokens
    drawn from `tokens`, each repeated once after BOS: a model with induction heads, the mechanism behind in-context
    learning (Olsson et al., 2022), predicts the second copy from the first; one without finds both alike."""
    rng = random.Random(f"fewshot/repeat/{seed}")
    length = min(length, len(tokens), (model.cfg.seq_len - 1) // 2)
    rows = [[bos, *(s := rng.sample(tokens, length)), *s] for _ in range(n)]
    x = torch.tensor(rows, device=device)
    was_training = model.training
    model.eval()
    nll = -torch.log_softmax(model(x[:, :-1]).float(), -1).gather(2, x[:, 1:, None])[..., 0]
    model.train(was_training)
    return nll[:, 1:length].mean().item(), nll[:, length + 1 :].mean().item()  # each copy's tokens after its first


def stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def evaluate_fewshot(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """0-shot and SHOTS-shot accuracy on every family, eval.fewshot_items items each, of the base model (of each
    checkpoint in `stages` when base is not one); a stage's figures are the means over the families, each family's
    under "tasks", and repeat_nll's two losses (repeat_nll_first, repeat_nll_second)."""
    stages = ["base"] if "base" in stages else stages
    docs = [r["text"] for r in read_parts(Path(run.path) / "data" / "val", ["text"])]
    n, device = run.config.eval.fewshot_items, pick_device()
    tok = load_tokenizer(run.path / "tokenizer")
    items = {family: with_shots(make_items(docs, family, n, whole_words(tok))) for family in FAMILIES}
    if run.config.data.facts:
        items["attribute"] = with_shots(attribute_items(list(facts.people(run.config.data.facts)), n))
    for family in [f for f, its in items.items() if len(its) <= 2 * SHOTS]:  # too few to draw shots from
        print(f"fewshot: left out {family}, only {len(items.pop(family))} items from {len(docs)} val documents")
    if not items:
        raise UserError(f"few-shot: no task has more than {2 * SHOTS} items from the {len(docs)} val documents of "
                        f"{run.path}; a larger data.val_fraction gives more")
    texts = {family: {k: prompts(its, k) for k in (0, SHOTS)} for family, its in items.items()}
    words = [i for i, size in enumerate(tok.byte_lengths()) if size > 1]  # merged tokens: no bytes, no specials
    figures = {}
    for stage in stages:
        model = load_model(run.path / stage, device)
        tasks = {}
        for family, its in items.items():
            acc = {k: accuracy(model, tok, its, texts[family][k], device) for k in (0, SHOTS)}
            tasks[family] = {"acc_0shot": round(acc[0], 4), f"acc_{SHOTS}shot": round(acc[SHOTS], 4), "n": len(its),
                             "chance": 1 / CHOICES, "stderr_0shot": round(stderr(acc[0], len(its)), 4),
                             f"stderr_{SHOTS}shot": round(stderr(acc[SHOTS], len(its)), 4)}
            print(f"fewshot {stage} {family}: 0-shot {acc[0]:.3f}, {SHOTS}-shot {acc[SHOTS]:.3f} "
                  f"(n={len(its)}, chance {1 / CHOICES:.2f})")
        first, second = repeat_nll(model, words, tok.bos_id, device=device)
        print(f"fewshot {stage}: a repeated random sequence, loss {first:.2f} nats a token on its first copy, "
              f"{second:.2f} on its second")
        figures[stage] = {"acc_0shot": round(sum(t["acc_0shot"] for t in tasks.values()) / len(tasks), 4),
                          f"acc_{SHOTS}shot": round(sum(t[f"acc_{SHOTS}shot"] for t in tasks.values()) / len(tasks), 4),
                          "n": sum(t["n"] for t in tasks.values()), "chance": 1 / CHOICES,
                          "repeat_nll_first": round(first, 3), "repeat_nll_second": round(second, 3), "tasks": tasks}
    examples = {family: texts[family][SHOTS][0] + " " + its[0].choices[its[0].answer] for family, its in items.items()}
    return {"figures": figures, "examples": examples}, figures
