"""Supervised fine-tuning: the base model learns the chat format and its identity from
conversations, with the loss on assistant tokens only (tokenizer/chat.py builds the mask)."""

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from chatforge.model.checkpoint import load_model, load_training_state, remove_checkpoint, save_checkpoint
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.posttrain.conversations import mixture_conversations, write_jsonl
from chatforge.pretrain.train import MetricsLog, lr_multiplier
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render

SFT_CKPT_EVERY = 100  # steps; SFT is minutes long, so this bounds the work a kill can lose


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


def prepare_data(run, tok: Tokenizer) -> tuple[list, list, dict]:
    """Write the mixture's conversations (`sft.mixture`, posttrain/conversations.py) to sft_data/{train,val}.jsonl
    and render them. Conversations that do not render, or have no assistant token within max_len, are counted and
    skipped; the stats also count the conversations taken per source and split."""
    sc = run.config.sft
    convs, stats = mixture_conversations(run.config)
    stats |= {"bad_conversations": 0, "no_trained_tokens": 0}
    rendered: dict[str, list] = {}
    for split, rows in convs.items():
        write_jsonl(run.path / "sft_data" / f"{split}.jsonl", rows)
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


def sft(run, resume: bool = False) -> dict:
    """The `sft` stage: base/ checkpoint + conversations → sft/ checkpoint, metrics/sft.jsonl."""
    sc = run.config.sft
    device = pick_device()
    keep_freed_memory()
    dtype = autocast_dtype(run.config.pretrain.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    train, val, stats = prepare_data(run, tok)
    if not train:
        raise ValueError("no usable SFT conversations")
    ckpt_dir = run.path / "sft"
    opt_state, state = load_training_state(ckpt_dir) if resume else (None, None)
    if state is None:
        remove_checkpoint(ckpt_dir)  # a fresh start must never later resume from an older run's checkpoint
        model, start_step = load_model(run.path / "base", device), 0
    else:
        model, start_step = load_model(ckpt_dir, device), state["step"]
        print(f"sft: resuming from step {start_step}")
    optimizer = make_optimizer(model, sc.lr, 0.0)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    log = MetricsLog(run.path / "metrics" / "sft.jsonl", start_step if start_step else None)

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
    t0 = time.time()
    for step in tqdm(range(start_step, sc.steps), initial=start_step, total=sc.steps, desc="sft", unit="step"):
        mult = lr_multiplier(step / sc.steps, step, 0, 1.0)  # linear decay to zero
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * mult
        idx = np.random.default_rng([sc.seed, step]).integers(0, len(train), sc.batch_size)  # resumable by step
        x, y = collate([train[i] for i in idx], sc.max_len)
        with autocast(device, dtype):
            loss = model(x.to(device), y.to(device))
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"sft loss is {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.write(step=step + 1, loss=round(loss.item(), 4), lr_mult=round(mult, 4))
        if (step + 1) % SFT_CKPT_EVERY == 0 and step + 1 < sc.steps:
            save_checkpoint(ckpt_dir, model, optimizer, {"step": step + 1})
    vl = val_loss()
    log.write(step=sc.steps, val_loss=round(vl, 4))
    save_checkpoint(ckpt_dir, model, optimizer, {"step": sc.steps})
    print(f"sft: val loss {vl:.4f} (assistant tokens) in {time.time() - t0:.0f}s")
    return {**stats, "steps": sc.steps, "val_loss": round(vl, 4), "seconds": round(time.time() - t0, 1)}

