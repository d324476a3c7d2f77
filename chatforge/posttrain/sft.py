"""Supervised fine-tuning: the base model learns the chat format and its identity from
conversations, with the loss on assistant tokens only (tokenizer/chat.py builds the mask)."""

import math
import time

import torch

from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model, remove_checkpoint
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.posttrain.conversations import mixture_conversations, write_jsonl
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


def collate(examples: list[tuple[list[int], list[int]]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example (at most max_len targets); untrained targets are -1."""
    T = min(max(len(ids) for ids, _ in examples) - 1, max_len)
    x = torch.zeros(len(examples), T, dtype=torch.long)
    y = torch.full((len(examples), T), -1, dtype=torch.long)
    for i, (ids, mask) in enumerate(examples):
        ids, mask = ids[: T + 1], mask[: T + 1]
        n = len(ids) - 1
        x[i, :n] = torch.tensor(ids[:-1])
        y[i, :n] = torch.tensor([t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=False)])
    return x, y


def prepare_data(run, tok: Tokenizer, out: str = "sft") -> tuple[list, list, dict]:
    """Write the mixture's conversations (`sft.mixture`, posttrain/conversations.py) to sft_data/{train,val}.jsonl
    and render them. Conversations that do not render, or have no assistant token within max_len, are counted and
    skipped; the stats also count the conversations taken per source and split."""
    sc = run.config.sft
    convs, stats = mixture_conversations(run.config)
    stats |= {"bad_conversations": 0, "no_trained_tokens": 0}
    rendered: dict[str, list] = {}
    for split, rows in convs.items():
        write_jsonl(run.path / f"{out}_data" / f"{split}.jsonl", rows)
        rendered[split] = []
        for c in rows:
            try:
                ids, mask = render(tok, c["messages"])
            except ValueError:
                stats["bad_conversations"] += 1
                continue
            if not any(mask[1 : sc.max_len + 1]):  # nothing to learn: would make a NaN loss
                stats["no_trained_tokens"] += 1
                continue
            rendered[split].append((ids, mask))
    return rendered["train"], rendered["val"], stats


def sft(run, resume: bool = False, init: str = "base", out: str = "sft") -> dict:
    """The `sft` stage: base/ checkpoint + conversations → sft/ checkpoint, metrics/sft.jsonl. Every
    `sft.ckpt_every` steps it measures the val loss and checkpoints; an interrupted run resumes exactly.
    The probe stage fine-tunes again with it: from `init`, into `out`/, `out`_data/ and metrics/`out`.jsonl."""
    sc = run.config.sft
    if sc.steps < 1 or sc.ckpt_every < 1:
        raise UserError(f"sft.steps and sft.ckpt_every must be >= 1, got {sc.steps} and {sc.ckpt_every}")
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

    def val_loss() -> float:
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for i in range(0, len(val), sc.batch_size):
                x, y = collate(val[i : i + sc.batch_size], sc.max_len)
                with autocast(device, dtype):
                    losses = model(x.to(device), y.to(device), reduction="none")
                total += losses.sum().item()
                n += (y >= 0).sum().item()
        model.train()
        return total / max(n, 1)

    print(f"sft: {len(train)} train / {len(val)} val conversations, {sc.steps} steps of {sc.batch_size}")
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
        x, y = collate([train[i] for i in idx], sc.max_len)
        with autocast(device, dtype):
            loss = model(x.to(device), y.to(device))
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
    print(f"sft: val loss {vl:.4f} (assistant tokens) after {state.step} steps, {state.elapsed:.0f}s")
    return {**stats, "steps": state.step, "val_loss": round(vl, 4), "train_seconds": round(state.elapsed, 1)}
