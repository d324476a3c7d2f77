"""Regurgitation: how often the base model continues a training document word for word, against held-out ones
(extractable memorisation, Carlini et al. 2021: a prefix of the document, the greedy continuation compared token by
token with the document's own next tokens).

Three sets: the start of ordinary train-split documents that pretraining read (a row it trained on began with
them), of val-split ones (never read), and the synthetic fact pages (data/facts.py), each cut right after a
person's name opens a paragraph, grouped by how many paragraphs mention that person (EXPOSURES): the rest of the
paragraph is the person's facts in one of a few templates, so its match by exposure shows how many mentions storing
them takes.
"""

import random
from collections.abc import Callable
from pathlib import Path

import torch

from chatforge.data import facts
from chatforge.data.pipeline import read_parts
from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT, KVCache
from chatforge.model.precision import pick_device
from chatforge.runs import Run
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.shards import TokenShards

SYNTHETIC = ("facts/", "copy/")  # the ids of data/facts.py's and data/copying.py's pages
BATCH = 256  # rows decoded together: a CPU step streams the weights once for all of them
READ_ROWS = 50_000  # pretraining rows scanned for the documents they start with: all of tiny's 7,200


def read_starts(run: Run, bos_id: int, n_tokens: int) -> set[tuple[int, ...]]:
    """The first n_tokens of every document a row of pretraining began with, in its first READ_ROWS rows (rows are
    positions 0, 1, ... of TokenShards.batch's order, so the same call gives the same rows)."""
    pc, seq_len = run.config.pretrain, run.config.model.seq_len
    rows = min(run.stage_info("pretrain").get("metrics", {}).get("tokens", 0) // seq_len, READ_ROWS)
    if rows == 0:
        return set()
    x, _ = TokenShards(run.path / "tokens", "train").batch(pc.seed, 0, rows, seq_len, bos_id)
    return {tuple(row[1 : 1 + n_tokens]) for row in x[x[:, 0] == bos_id].tolist()}


def document_items(tok: Tokenizer, texts: list[str], n: int, prefix: int, length: int, seed: int = 0,
                   keep: Callable[[list[int]], bool] = lambda ids: True) -> list[tuple[list[int], list[int]]]:
    """(BOS + the first `prefix` tokens, the next `length` tokens) of n documents so long whose first prefix + length
    tokens `keep` accepts, drawn at random."""
    rng = random.Random(seed)
    out = []
    for text in rng.sample(texts, len(texts)):
        ids = tok.encode(text)[: prefix + length]
        if len(ids) == prefix + length and keep(ids):
            out.append(([tok.bos_id] + ids[:prefix], ids[prefix:]))
            if len(out) == n:
                break
    return out


def fact_items(tok: Tokenizer, n_people: int, n: int, prefix: int, length: int,
               seed: int = 0) -> dict[int, list[tuple[list[int], list[int]]]]:
    """For each exposure, up to n (the last `prefix` + 1 tokens of a fact page up to a paragraph-opening name, from
    paragraphs with that much page before them; the rest of the paragraph, at most `length` tokens)."""
    exposure = {p.name: p.exposure for p in facts.people(n_people)}
    found: dict[int, list[tuple[list[int], list[int]]]] = {e: [] for e in facts.EXPOSURES}
    for _, page in facts.documents(n_people):
        start = 0
        for para in page.split("\n\n"):
            name = " ".join(para.split()[:2])
            head = [tok.bos_id] + tok.encode(page[: start + len(name)]) if name in exposure else []
            if len(head) > prefix:
                found[exposure[name]].append((head[-prefix - 1 :], tok.encode(para[len(name) :])[:length]))
            start += len(para) + 2
    rng = random.Random(seed)
    return {e: rng.sample(items, min(n, len(items))) for e, items in found.items()}


@torch.no_grad()
def greedy(model: GPT, prompts: list[list[int]], n_tokens: int) -> list[list[int]]:
    """Greedy continuations of n_tokens: prompts of one length go together, BATCH at a time, through a KV cache."""
    model.eval()
    device, dtype = model.embed_tokens.weight.device, model.embed_tokens.weight.dtype
    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    for length, group in by_length.items():
        for b in range(0, len(group), BATCH):
            rows = group[b : b + BATCH]
            cache = KVCache(model.cfg, len(rows), length + n_tokens, device, dtype)
            x, new = torch.tensor([prompts[i] for i in rows], device=device), []
            for _ in range(n_tokens):
                x = model(x, cache=cache)[:, -1].argmax(-1, keepdim=True)
                new.append(x)
            for i, ids in zip(rows, torch.cat(new, 1).tolist(), strict=True):
                out[i] = ids
    return out


def matches(outs: list[list[int]], refs: list[list[int]]) -> dict:
    """Mean share of continuation tokens equal to the document's at the same place ("match"), and the share of
    continuations whose first half (at least) is the document's, verbatim ("verbatim_rate")."""
    if not refs:
        return {"match": None, "verbatim_rate": None, "n": 0}
    match, verbatim = 0.0, 0
    for out, ref in zip(outs, refs, strict=True):
        same = [a == b for a, b in zip(out, ref, strict=False)]
        match += sum(same) / len(ref)
        run = same.index(False) if False in same else len(same)
        verbatim += 2 * run >= len(ref)
    return {"match": round(match / len(refs), 4), "verbatim_rate": round(verbatim / len(refs), 4), "n": len(refs)}


def evaluate_regurgitation(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """The base model's matches on eval.regurgitation_docs train and val documents and on half as many fact
    paragraphs per exposure (figures under "base"), all continued in one batched pass."""
    if "base" not in stages:
        raise UserError(f"regurgitation evaluates the base model; {run.path}'s checkpoints to evaluate are: "
                        f"{', '.join(stages) or 'none'}")
    ec, data = run.config.eval, Path(run.path) / "data"
    n, prefix, length = ec.regurgitation_docs, ec.regurgitation_prefix, ec.regurgitation_tokens
    if prefix + 1 + length > run.config.model.seq_len:
        raise UserError(f"eval.regurgitation_prefix + eval.regurgitation_tokens + 1 (BOS) = {prefix + 1 + length} "
                        f"tokens do not fit the model's context of {run.config.model.seq_len}")
    tok = load_tokenizer(run.path / "tokenizer")
    train = [r["text"] for r in read_parts(data / "train", ["id", "text"]) if not r["id"].startswith(SYNTHETIC)]
    val = [r["text"] for r in read_parts(data / "val", ["text"])]
    seen = read_starts(run, tok.bos_id, prefix + length)
    sets = {"train": document_items(tok, train, n, prefix, length, keep=lambda ids: tuple(ids) in seen),
            "val": document_items(tok, val, n, prefix, length)}
    if run.config.data.facts:
        sets |= {f"facts_x{e}": items for e, items in fact_items(tok, run.config.data.facts, n // 2, prefix,
                                                                  length).items()}
    everything = [item for items in sets.values() for item in items]
    if not everything:
        raise UserError(f"no document in {data} has {prefix + length} tokens to continue; lower "
                        f"eval.regurgitation_prefix or eval.regurgitation_tokens")
    outs = greedy(load_model(run.path / "base", pick_device()), [p for p, _ in everything], length)
    found, k = {}, 0
    for name, items in sets.items():
        found[name] = matches(outs[k : k + len(items)], [r for _, r in items])
        k += len(items)
    figures = {f"{s}_{key}": found[s][key] for s in ("train", "val") for key in ("match", "verbatim_rate")}
    figures |= {"n": found["train"]["n"] + found["val"]["n"], "prefix_tokens": prefix, "tokens": length,
                "facts": {name.removeprefix("facts_x"): m for name, m in found.items() if name.startswith("facts_")}}
    print(f"regurgitation base: match train {figures['train_match']} val {figures['val_match']}, verbatim train "
          f"{figures['train_verbatim_rate']} val {figures['val_verbatim_rate']}"
          + "".join(f"; facts x{e} {m['match']}" for e, m in figures["facts"].items()))
    return {"base": figures}, {"base": figures}
