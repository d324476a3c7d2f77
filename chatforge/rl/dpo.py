"""DPO (Rafailov et al., 2023): preference pairs train the chat model directly, no reward model and no sampling.
The loss is -log sigmoid(beta ((log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected)))),
plus dpo.sft_weight x the chosen answers' NLL per token (RPO),
log-probabilities summed over the assistant's tokens; the reference (the starting chat model: rl/common.py's
start_checkpoint) is scored once, up front.

Pairs come from a TRL-style JSONL file (dpo.data), or from rl.task: its reference answer over the same answer
with a wrong number."""

import random
import time

import torch
import torch.nn.functional as F

from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model, save_checkpoint
from chatforge.model.gpt import GPT
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.rl.common import load_task, pad, read_pairs, start_checkpoint, token_logprobs
from chatforge.rl.reward import as_parts, edit_answer, wrong_number
from chatforge.tasks.common import Task
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.chat import render
from chatforge.train import MetricsLog, batch_indices, lr_multiplier, progress_bar, set_lr

EVAL_BATCH = 32


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float, sft_weight: float = 0.0,
             chosen_tokens: int = 1) -> tuple[torch.Tensor, dict]:
    """Sequence log-probabilities (B,) -> the mean loss, and the share of pairs whose implicit reward ranks the
    chosen answer first. With sft_weight, RPO (Pang et al., 2024): plus sft_weight x the chosen answers' NLL per
    token (chosen_tokens in all), which keeps their likelihood up: on tiny's calculator pairs plain DPO took
    held-out accuracy from 0.512 to 0.310, with the NLL term (weight 1) to 0.496."""
    logits = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected))
    preference = -F.logsigmoid(logits).mean()
    loss = preference - sft_weight * policy_chosen.sum() / chosen_tokens
    return loss, {"reward_acc": (logits > 0).float().mean().item(), "dpo": preference.item()}


def sequence_logprobs(model: GPT, seqs: list[tuple[list[int], list[int]]], device: str, dtype) -> torch.Tensor:
    """log pi of each (ids, mask) sequence's trained tokens, summed: (B,)."""
    x, y, mask = (t.to(device) for t in pad(seqs))
    with autocast(device, dtype):
        logp = token_logprobs(model, x, y)
    return (logp * mask).sum(1)


def answer_pairs(task: Task, n: int, seed: int, config) -> list[tuple[list[dict], list[dict]]]:
    """(reference answer, the same with a wrong number) for n train-split examples with a numeric answer."""
    rng = random.Random(seed)
    out = []
    for ex in task.examples("train", n, seed, config):
        answer = ex.get("answer")
        if not isinstance(answer, int | float):
            continue
        wrong = edit_answer(as_parts(ex["messages"][-1]["content"]), lambda t, a=answer: wrong_number(t, a, rng))
        if wrong:
            out.append((ex["messages"], ex["messages"][:-1] + [{"role": "assistant", "content": wrong}]))
    if not out:
        raise UserError(f"task {task.name} has no numeric answers to make pairs from; give dpo.data=PAIRS.jsonl")
    return out


def dpo(run) -> dict:
    """`chatforge dpo`: the probe/ (or sft/) checkpoint + pairs -> dpo/ checkpoint, metrics/dpo.jsonl. Minutes at
    most: a run is redone whole."""
    dc = run.config.dpo
    if dc.steps < 1 or dc.batch_size < 1 or dc.beta <= 0:
        raise UserError("dpo.steps and dpo.batch_size must be >= 1 and dpo.beta > 0")
    device = pick_device()
    keep_freed_memory()
    dtype = autocast_dtype(run.config.pretrain.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    pairs = read_pairs(dc.data) if dc.data else answer_pairs(load_task(run.config.rl.task), dc.pairs, dc.seed,
                                                             run.config)
    model = load_model(run.path / start_checkpoint(run.path), device)
    seq_len = model.cfg.seq_len
    encoded = [(render(tok, c), render(tok, r)) for c, r in pairs]
    encoded = [(c, r) for c, r in encoded if max(len(c[0]), len(r[0])) <= seq_len]
    if not encoded:
        raise UserError(f"no preference pair fits the context of {seq_len} tokens")
    with torch.no_grad():  # the reference is the starting model: scored once, before any step
        ref = [sequence_logprobs(model, [p[side] for p in encoded[i : i + EVAL_BATCH]], device, dtype)
               for side in (0, 1) for i in range(0, len(encoded), EVAL_BATCH)]
    half = len(ref) // 2
    ref_chosen, ref_rejected = torch.cat(ref[:half]), torch.cat(ref[half:])
    optimizer = make_optimizer(model, dc.lr, 0.0)
    log = MetricsLog(run.path / "metrics" / "dpo.jsonl")
    print(f"dpo: {len(encoded)} pairs, {dc.steps} steps of {dc.batch_size}, beta {dc.beta}")
    t0 = time.time()
    bar = progress_bar("dpo", dc.steps, 0)
    for step in range(1, dc.steps + 1):
        idx = batch_indices(len(encoded), (step - 1) * dc.batch_size, dc.batch_size, dc.seed)
        both = sequence_logprobs(model, [encoded[i][0] for i in idx] + [encoded[i][1] for i in idx], device, dtype)
        at = torch.tensor(idx, device=device)
        loss, stats = dpo_loss(both[: len(idx)], both[len(idx) :], ref_chosen[at], ref_rejected[at], dc.beta,
                               dc.sft_weight, sum(sum(encoded[i][0][1][1:]) for i in idx))
        set_lr(optimizer, lr_multiplier(0.0, step - 1, dc.warmup_steps, 0.0))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.write(step, loss=round(loss.item(), 4), dpo=round(stats["dpo"], 4),
                  reward_acc=round(stats["reward_acc"], 4))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    save_checkpoint(run.path / "dpo", model)
    print(f"dpo: loss {loss.item():.4f} after {dc.steps} steps, {time.time() - t0:.0f}s")
    return {"steps": dc.steps, "pairs": len(encoded), "loss": round(loss.item(), 4),
            "train_seconds": round(time.time() - t0, 1)}
