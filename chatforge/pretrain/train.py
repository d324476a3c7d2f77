"""Next-token pretraining: the base model. Explicit loop: schedule, grad accumulation, val bits per
byte, metrics JSONL, atomic checkpoints and exact resume.

Resume is exact because a step's rows are a function of the step (TokenShards.batch takes a
position in a seeded order), so a restarted run needs just the model, the optimizer and the step.
"""

import json
import math
import time
from pathlib import Path

import torch
from tqdm import tqdm

from chatforge.eval.bpb import evaluate_bpb, unigram_bpb
from chatforge.model.checkpoint import load_model, load_training_state, remove_checkpoint, save_checkpoint
from chatforge.model.gpt import GPT
from chatforge.model.precision import autocast, autocast_dtype, pick_device
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import TokenShards, row_position


def make_optimizer(model: GPT, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # Embeddings start at std 1, so they need a larger step to move in relative terms; the head
    # starts near zero and is the most sensitive matrix (nanochat uses a similar split).
    groups = [
        {"params": [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n
                    and "lm_head" not in n], "lr": lr, "weight_decay": weight_decay},
        {"params": [model.embed_tokens.weight], "lr": lr * 10, "weight_decay": 0.0},
        {"params": [model.lm_head.weight], "lr": lr, "weight_decay": 0.0},
        {"params": [p for p in model.parameters() if p.dim() == 1], "lr": lr, "weight_decay": 0.0},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    fused = next(model.parameters()).is_cuda
    return torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-10, fused=fused)


def lr_multiplier(progress: float, step: int, warmup_steps: int, warmdown_frac: float) -> float:
    """Warmup (by steps), constant, then linear warmdown over the last `warmdown_frac` of progress."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress <= 1 - warmdown_frac:
        return 1.0
    return max((1 - progress) / warmdown_frac, 0.0)


class MetricsLog:
    """metrics/STAGE.jsonl, one JSON object per line. On resume, lines past the checkpoint are dropped
    so the file reads as if the run had never stopped."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = []
        if resume_step is not None and self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines() if json.loads(ln).get("step", 0) <= resume_step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def pretrain(run, resume: bool = False) -> dict:
    """The `pretrain` stage: tokens/ → base/ checkpoint, metrics/pretrain.jsonl."""
    cfg, pc = run.config, run.config.pretrain
    device = pick_device()
    dtype = autocast_dtype(pc.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    if tok.vocab_size != cfg.model.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens but model.vocab_size={cfg.model.vocab_size}")
    train, val = TokenShards(run.path / "tokens", "train"), TokenShards(run.path / "tokens", "val")
    byte_lengths = torch.tensor(tok.byte_lengths(), dtype=torch.int64)
    ckpt_dir = run.path / "base"
    torch.manual_seed(pc.seed)

    opt_state, state = load_training_state(ckpt_dir) if resume else (None, None)
    if state is None:
        remove_checkpoint(ckpt_dir)  # a fresh start must never later resume from an older run's checkpoint
        model = GPT(cfg.model).to(device)
        start_step, elapsed = 0, 0.0
    else:
        model = load_model(ckpt_dir, device)
        start_step, elapsed = state["step"], state["elapsed"]
        print(f"pretrain: resuming from step {start_step} in {ckpt_dir}")
    optimizer = make_optimizer(model, pc.lr, pc.weight_decay)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    log = MetricsLog(run.path / "metrics" / "pretrain.jsonl", start_step if start_step else None)
    fwd = torch.compile(model) if pc.compile else model

    tokens_per_step = pc.batch_size * pc.grad_accum * cfg.model.seq_len
    print(f"pretrain: {model.num_params():,} parameters, {tokens_per_step:,} tokens/step, {pc.steps} steps, "
          f"device {device}, {'bf16 autocast' if dtype else 'fp32'}{', compiled' if pc.compile else ''}")
    baseline = unigram_bpb(train, val, byte_lengths.numpy(), cfg.model.seq_len, pc.eval_tokens)

    def val_bpb() -> float:
        return evaluate_bpb(model, val, byte_lengths, pc.batch_size, pc.eval_tokens, device, dtype)

    budget = pc.max_minutes * 60
    step, bpb = start_step, float("nan")
    bar = tqdm(total=pc.steps, initial=start_step, desc="pretrain", unit="step")
    t_last = time.time()
    while step < pc.steps:
        progress = max(step / pc.steps, elapsed / budget if budget else 0.0)
        if progress >= 1:
            print(f"pretrain: time budget of {pc.max_minutes} min reached at step {step}")
            break
        mult = lr_multiplier(progress, step, pc.warmup_steps, pc.warmdown_frac)
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * mult
        loss_sum = 0.0
        for micro in range(pc.grad_accum):
            position = row_position(step, micro, pc.grad_accum, pc.batch_size)
            x, y = train.batch(pc.seed, position, pc.batch_size, cfg.model.seq_len, tok.bos_id)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with autocast(device, dtype):
                loss = fwd(x, y) / pc.grad_accum
            loss.backward()
            loss_sum += loss.item()
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"loss is {loss_sum} at step {step}; the last good checkpoint is in {ckpt_dir}")
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.time() - t_last
        t_last = time.time()
        elapsed += dt
        row = dict(step=step, loss=round(loss_sum, 4), lr_mult=round(mult, 4), grad_norm=round(grad_norm, 4),
                   tok_s=round(tokens_per_step / dt), elapsed=round(elapsed, 2))
        last = step == pc.steps or (budget and elapsed >= budget)
        if step % pc.eval_every == 0 or last:
            bpb = val_bpb()
            row["val_bpb"] = round(bpb, 4)
            t_last = time.time()  # evaluation time is not training time
        log.write(**row)
        bar.set_postfix(loss=f"{loss_sum:.3f}", bpb=f"{bpb:.3f}", tok_s=row["tok_s"])
        bar.update(1)
        if step % pc.ckpt_every == 0 or last:
            save_checkpoint(ckpt_dir, model, optimizer, {"step": step, "elapsed": elapsed})
            t_last = time.time()
    bar.close()
    if step == start_step:  # nothing trained in this call (budget already spent): still leave a result
        save_checkpoint(ckpt_dir, model, optimizer, {"step": step, "elapsed": elapsed})
    if not math.isfinite(bpb):
        bpb = val_bpb()
    print(f"pretrain: val bpb {bpb:.4f} (unigram baseline {baseline:.4f}) after {step} steps, {elapsed:.0f}s")
    return {"steps": step, "val_bpb": round(bpb, 4), "unigram_bpb": round(baseline, 4),
            "train_seconds": round(elapsed, 1), "tokens": step * tokens_per_step, "params": model.num_params(),
            "tok_s": round(step * tokens_per_step / max(elapsed, 1e-9))}
