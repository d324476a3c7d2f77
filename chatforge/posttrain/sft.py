"""Supervised fine-tuning: the base model learns the chat format and its identity from
conversations, with the loss on assistant tokens only (tokenizer/chat.py builds the mask).

Conversations are packed whole into rows of max_len tokens (no padding to the longest in a batch), and attention
stays inside each conversation (packed_loss), so a packed row trains as its conversations would one by one.
"""

import bisect
import math
import random
import time

import torch
import torch.nn.functional as F

from chatforge.errors import UserError
from chatforge.infer.tools import tools_for_run
from chatforge.model.checkpoint import load_model, remove_checkpoint
from chatforge.model.gpt import GPT, plain_attention
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.posttrain.conversations import mixture_conversations, write_jsonl
from chatforge.tasks.score import eval_examples, score_examples
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render
from chatforge.train import (
    MetricsLog,
    TrainState,
    batch_indices,
    check_finite,
    load_state,
    lr_multiplier,
    progress,
    progress_bar,
    restore_rng,
    save_state,
    set_lr,
)


def pack(lengths: list[int], capacity: int, seed: int) -> list[list[int]]:
    """Rows of conversations, each row the indices of conversations whose lengths sum to at most `capacity`:
    best-fit decreasing (each conversation, longest first, into the fullest row it fits) over a seeded shuffle,
    so rows mix sources. Whole conversations only: a question is never cut from its answer."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep the shuffled order
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in order:
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            rows.append([])
            room, row = capacity, len(rows) - 1
        else:
            room, row = free.pop(at)
        rows[row].append(i)
        bisect.insort(free, (room - lengths[i], row))
    return rows


def collate(rows: list[list[tuple[list[int], list[int]]]], max_len: int) -> tuple[torch.Tensor, ...]:
    """Packed rows of (ids, mask) conversations → inputs, targets and conversation numbers, max_len positions each.
    The targets are -1 where the mask is 0 and in the padding after the row's last conversation; `doc` numbers the
    conversations of a row (the padding the next number), so attention can stay inside each (packed_loss)."""
    x = torch.zeros(len(rows), max_len, dtype=torch.long)
    y = torch.full((len(rows), max_len), -1, dtype=torch.long)
    doc = torch.full((len(rows), max_len), len(max(rows, key=len)), dtype=torch.long)
    for r, row in enumerate(rows):
        ids = [t for conv_ids, _ in row for t in conv_ids]
        mask = [m for _, conv_mask in row for m in conv_mask]
        assert len(ids) <= max_len + 1, "pack() fills a row with at most max_len + 1 tokens"
        n = len(ids) - 1
        x[r, :n] = torch.tensor(ids[:-1])
        y[r, :n] = torch.tensor([t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)])
        doc[r, :n] = torch.tensor([d for d, (conv_ids, _) in enumerate(row) for _ in conv_ids][:-1])
    return x, y, doc


def packed_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, doc: torch.Tensor,
                reduction: str = "mean") -> torch.Tensor:
    """GPT.forward's loss with each position attending only to the earlier positions of its own conversation, as if
    each conversation were alone in its row (rotary positions are relative: the offset in the row changes nothing).
    Attending across conversations, the model could copy an answer (the assistant's name) from the one before
    instead of learning it, and chat has no conversation before."""
    T = x.size(1)
    pos = torch.arange(T, device=x.device)
    # (B, 1, T, T), the same for every head, as comparisons that Inductor computes inside the softmax kernel
    allowed = (doc[:, None, :, None] == doc[:, None, None, :]) & (pos[:, None] >= pos)

    def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if not (q.is_cpu and torch.compiler.is_compiling()):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=True)
        # compiled on CPU, the plain formula, as gpt.causal_attention: SDPA with a mask ran at 0.76x its tokens/s
        return plain_attention(q, k, v, allowed)

    w = model.weights()
    logits = w.logits(w.hidden(x, model.rope_cos[:T], model.rope_sin[:T], attend))
    return F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1, reduction=reduction)


def render_and_pack(tok: Tokenizer, conversations: list[dict], max_len: int, seed: int,
                    stats: dict) -> list[list[tuple[list[int], list[int]]]]:
    """Render conversations and pack them into rows of max_len + 1 tokens (pack). Those that do not render
    (`bad_conversations`), are longer than a row (`too_long`) or have no assistant token (`no_trained_tokens`)
    are counted in `stats` and skipped."""
    for key in ("bad_conversations", "too_long", "no_trained_tokens"):
        stats.setdefault(key, 0)
    rendered = []
    for c in conversations:
        try:
            ids, mask = render(tok, c["messages"])
        except ValueError:
            stats["bad_conversations"] += 1
            continue
        if len(ids) > max_len + 1:
            stats["too_long"] += 1
        elif not any(mask):  # nothing to learn
            stats["no_trained_tokens"] += 1
        else:
            rendered.append((ids, mask))
    return [[rendered[i] for i in row] for row in pack([len(ids) for ids, _ in rendered], max_len + 1, seed)]


def prepare_data(run, tok: Tokenizer, out: str = "sft") -> tuple[list, list, dict]:
    """Write the mixture's conversations (`sft.mixture`, posttrain/conversations.py) to OUT_data/{train,val}.jsonl
    and render_and_pack each split; the stats also count the conversations taken per source and split, those
    skipped, and how full the training rows are (`row_fill`)."""
    sc = run.config.sft
    convs, stats = mixture_conversations(run.config)
    for message in stats["bad_line_errors"]:
        print(f"sft: skipped {message}")
    packed: dict[str, list] = {}
    for split, rows in convs.items():
        write_jsonl(run.path / f"{out}_data" / f"{split}.jsonl", rows)
        packed[split] = render_and_pack(tok, rows, sc.max_len, sc.seed, stats)
    tokens = sum(len(ids) for row in packed["train"] for ids, _ in row)
    stats["rows"] = len(packed["train"])
    stats["row_fill"] = round(tokens / max(1, len(packed["train"]) * (sc.max_len + 1)), 4)
    return packed["train"], packed["val"], stats


def sft(run, resume: bool = False, init: str = "base", out: str = "sft") -> dict:
    """The `sft` stage: base/ checkpoint + conversations → sft/ checkpoint, metrics/sft.jsonl. Every
    `sft.ckpt_every` steps it measures the val loss and checkpoints; an interrupted run resumes exactly.
    The probe stage fine-tunes again with it: from `init`, into `out`/, `out`_data/ and metrics/`out`.jsonl."""
    sc = run.config.sft
    if sc.steps < 1 or sc.ckpt_every < 1:
        raise UserError(f"sft.steps and sft.ckpt_every must be >= 1, got {sc.steps} and {sc.ckpt_every}")
    if sc.max_len > run.config.model.seq_len:
        raise UserError(f"sft.max_len={sc.max_len} is longer than the model's context ({run.config.model.seq_len})")
    device = pick_device()
    keep_freed_memory()
    dtype = autocast_dtype(run.config.pretrain.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    train, val, stats = prepare_data(run, tok, out)
    if not train:
        raise UserError("no usable SFT conversations")
    ckpt_dir = run.path / out
    ckpt = load_state(ckpt_dir) if resume else None
    if ckpt is None:
        remove_checkpoint(ckpt_dir)  # a fresh start must never later resume from an older run's checkpoint
        model, state = load_model(run.path / init, device), TrainState()
    else:
        model, state = load_model(ckpt_dir, device), ckpt.state
        print(f"sft: resuming from step {state.step}")
    optimizer = make_optimizer(model, sc.lr, 0.0)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
    log = MetricsLog(run.path / "metrics" / f"{out}.jsonl", state.step)

    loss_fn = torch.compile(packed_loss) if run.config.pretrain.compile else packed_loss  # rows are all max_len
    evals = eval_examples(run.config, sc.eval_examples)
    tools = tools_for_run(run.path, run.config.tools)

    def val_loss() -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val), sc.batch_size):
                x, y, doc = collate(val[i : i + sc.batch_size], sc.max_len)
                with autocast(device, dtype):
                    losses = packed_loss(model, x.to(device), y.to(device), doc.to(device), reduction="none")
                total += losses.sum().item()
                n += (y >= 0).sum().item()
        model.train()
        return total / max(n, 1)

    print(f"sft: {stats['rows']} train rows ({stats['row_fill']:.0%} full) / {len(val)} val rows of {sc.max_len} "
          f"tokens, {sc.steps} steps of {sc.batch_size} rows; skipped: {stats['too_long']} longer than a row, "
          f"{stats['bad_conversations']} bad, {stats['no_trained_tokens']} without assistant tokens")
    start_step, vl = state.step, float("nan")
    last_saved = None if ckpt is None else state.step
    bar = progress_bar(out, sc.steps, start_step)
    if ckpt is not None:  # last before the first step: the set-up above draws random numbers
        restore_rng(ckpt.rng)
    t_last = time.time()
    while state.step < sc.steps:
        done = progress(state.step, sc.steps, state.elapsed, sc.max_minutes)
        if done >= 1:
            print(f"sft: time budget of {sc.max_minutes} min reached at step {state.step}")
            break
        mult = lr_multiplier(done, state.step, 0, 1.0)  # linear decay to zero
        set_lr(optimizer, mult)
        idx = batch_indices(len(train), state.position, sc.batch_size, sc.seed)
        state.position += sc.batch_size
        x, y, doc = collate([train[i] for i in idx], sc.max_len)
        state.extra["tokens"] = state.extra.get("tokens", 0) + sum(len(ids) - 1 for i in idx for ids, _ in train[i])
        state.extra["trained_tokens"] = state.extra.get("trained_tokens", 0) + int((y >= 0).sum())
        with autocast(device, dtype):
            loss = loss_fn(model, x.to(device), y.to(device), doc.to(device))
        loss.backward()
        loss_value = loss.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        check_finite(loss_value, grad_norm, state.step + 1, ckpt_dir, last_saved, "sft.lr")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.elapsed += time.time() - t_last
        row = dict(loss=round(loss_value, 4), lr_mult=round(mult, 4), grad_norm=round(grad_norm, 4))
        saving = state.step % sc.ckpt_every == 0 or progress(state.step, sc.steps, state.elapsed, sc.max_minutes) >= 1
        if saving:
            vl = val_loss()
            row["val_loss"] = round(vl, 4)
            if evals:  # greedy answers to held-out examples of each task, scored by the task (eval/chat.py)
                row |= score_examples(model, tok, evals, tools, sc.identity)["figures"]
                model.train()
        log.write(state.step, **row)
        bar.set_postfix(loss=f"{loss_value:.3f}", val_loss=f"{vl:.3f}")
        bar.update(1)
        if saving:
            save_state(ckpt_dir, model, optimizer, state)
            last_saved = state.step
        t_last = time.time()  # evaluations and checkpoints are not training time
    bar.close()
    if state.step == start_step:  # nothing trained in this call (budget already spent): still leave a result
        save_state(ckpt_dir, model, optimizer, state)
    if not math.isfinite(vl):
        vl = val_loss()
    tokens, trained = state.extra.get("tokens", 0), state.extra.get("trained_tokens", 0)
    tok_s = tokens / max(state.elapsed, 1e-9)
    print(f"sft: val loss {vl:.4f} (assistant tokens) after {state.step} steps, {state.elapsed:.0f}s, "
          f"{tokens:,} tokens ({trained:,} trained), {tok_s:,.0f} tokens/s")
    return {**stats, "steps": state.step, "val_loss": round(vl, 4), "train_seconds": round(state.elapsed, 1),
            "tokens": tokens, "trained_tokens": trained, "tok_s": round(tok_s)}
