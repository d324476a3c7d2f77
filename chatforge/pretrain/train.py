"""Next-token pretraining: the base model. Explicit loop: schedule, grad accumulation, val bits per
byte, metrics JSONL, atomic checkpoints, exact resume, and DDP under `torchrun` (the shared parts
from the training kit, chatforge/train.py).

A step's rows are a function of the step (TokenShards.batch takes a position in a seeded order), so
the data position needs no state of its own. The same position arithmetic gives DDP ranks disjoint
rows: N processes at batch B read exactly the rows one process at batch N*B would.
"""

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from chatforge.config import adamw_lr
from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model, remove_checkpoint
from chatforge.model.gpt import GPT
from chatforge.model.hf import is_hf_checkpoint, load_hf_model
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory
from chatforge.pretrain.bpb import evaluate_bpb, unigram_bpb
from chatforge.pretrain.horizon import resolve_pretrain
from chatforge.pretrain.mfu import peak_flops
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.hf import load_hf_tokenizer
from chatforge.tokenizer.shards import TokenShards, row_position
from chatforge.train import (
    MetricsLog,
    TrainState,
    check_finite,
    distributed,
    load_state,
    lr_multiplier,
    progress,
    progress_bar,
    restore_rng,
    save_state,
    set_lr,
)

# Greedy continuations of these are printed and logged at every evaluation: the sample corpus is BBC
# news and Shakespeare, so a learning model visibly moves from noise to news prose and verse.
SAMPLE_PROMPTS = ["The government said", "Shares in the company", "ROMEO. O"]


def samples(model: GPT, tok, max_tokens: int, device: str, dtype) -> list[str]:
    with autocast(device, dtype):
        return [p + tok.decode(model.sample([tok.bos_id, *tok.encode(p)], max_tokens)) for p in SAMPLE_PROMPTS]


def initial_model(run, tok, device: str) -> GPT:
    """A fresh model from the run's config, or `pretrain.init_from`'s weights (continued pretraining on
    this run's data, e.g. domain adaptation), which must share this run's tokenizer. The source is a chatforge
    checkpoint (RUN/base) or a Hugging Face Qwen3/Llama directory (its tokenizer.json is the tokenizer)."""
    src = run.config.pretrain.init_from
    if not src:
        return GPT(run.config.model).to(device)
    src = Path(src)
    if is_hf_checkpoint(src):
        theirs = load_hf_tokenizer(src)
        if (theirs.enc._mergeable_ranks, theirs.enc._special_tokens, theirs.enc._pat_str) != (
                tok.enc._mergeable_ranks, tok.enc._special_tokens, tok.enc._pat_str):
            raise UserError(f"pretrain.init_from: {src}'s tokenizer is not {run.path}'s; redo this run's "
                            f"tokenizer stage with --tokenizer.from_dir={src} "
                            f"--tokenizer.vocab_size={theirs.vocab_size} --force")
        return load_hf_model(src, run.config.model.seq_len, tok.vocab_size).to(device)
    if not (src / "model.safetensors").exists() or not (src / "config.json").exists():
        raise UserError(f"pretrain.init_from: no checkpoint (model.safetensors + config.json) in {src}")
    try:
        model = load_model(src, device)
    except TypeError as e:
        raise UserError(f"pretrain.init_from: {src}/config.json is not a chatforge model config ({e})") from None
    ours, theirs = run.path / "tokenizer" / "tokenizer.tiktoken", src.parent / "tokenizer" / "tokenizer.tiktoken"
    if model.cfg.vocab_size != tok.vocab_size or (theirs.exists() and theirs.read_bytes() != ours.read_bytes()):
        raise UserError(f"pretrain.init_from: {src} was trained with another tokenizer than {run.path}'s "
                        f"(vocab {model.cfg.vocab_size} vs {tok.vocab_size}); redo this run's tokenizer stage with "
                        f"--tokenizer.from_dir={src.parent / 'tokenizer'} --force")
    return model


def pretrain(run, resume: bool = False) -> dict:
    """The `pretrain` stage: tokens/ → base/ checkpoint, metrics/pretrain.jsonl. Under torchrun every
    rank runs this; rank 0 alone evaluates, logs and writes checkpoints."""
    with distributed() as (rank, world, device):
        return _pretrain(run, resume, rank, world, device)


def _pretrain(run, resume: bool, rank: int, world: int, device: str) -> dict:
    pc = run.config.pretrain
    master = rank == 0
    keep_freed_memory()
    # Everything that can be wrong with the inputs is checked before a checkpoint is touched.
    dtype = autocast_dtype(pc.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    if tok.vocab_size != run.config.model.vocab_size:
        raise UserError(f"tokenizer has {tok.vocab_size} tokens but model.vocab_size={run.config.model.vocab_size}")
    train, val = TokenShards(run.path / "tokens", "train"), TokenShards(run.path / "tokens", "val")
    byte_lengths = torch.tensor(tok.byte_lengths(), dtype=torch.int64)
    ckpt_dir = run.path / "base"
    if world > 1:  # rank 0's view of the manifest decides, so all ranks start from the same place
        flag = [resume]
        dist.broadcast_object_list(flag, src=0)
        resume = flag[0]
    torch.manual_seed(pc.seed)

    ckpt = load_state(ckpt_dir) if resume else None
    if ckpt is None:
        model, state = initial_model(run, tok, device), TrainState()
    else:
        model, state = load_model(ckpt_dir, device), ckpt.state
        if master:
            print(f"pretrain: resuming from step {state.step} in {ckpt_dir}")
    if model.cfg != run.config.model:  # init_from brought its own architecture: later stages must see it
        run.config.model = model.cfg
        run.save()
    seq_len = model.cfg.seq_len
    pc = resolve_pretrain(pc, model.cfg, world)  # the batch and steps derived from the model actually trained
    grad_accum, tokens_per_step = pc.grad_accum, pc.batch_tokens
    rows_per_step = tokens_per_step // seq_len
    if rows_per_step > len(train.grid(seq_len, tok.bos_id)):
        raise UserError(f"one step's batch ({rows_per_step} rows of {seq_len} tokens) is larger than the "
                        f"training split ({len(train.grid(seq_len, tok.bos_id))} rows); lower the batch")
    if ckpt is None and master:
        remove_checkpoint(ckpt_dir)  # a fresh start must never later resume from an older run's checkpoint
    lr = pc.lr or adamw_lr(model.cfg.n_embd)
    optimizer = make_optimizer(model, lr, pc.weight_decay, pc.matrix_lr)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
    log = MetricsLog(run.path / "metrics" / "pretrain.jsonl", state.step) if master else None
    fwd = torch.compile(model) if pc.compile else model
    if world > 1:  # DDP averages gradients across ranks during backward
        fwd = DistributedDataParallel(fwd, device_ids=[torch.device(device).index] if device != "cpu" else None)

    flops_per_token = model.flops_per_token()
    peak = peak_flops(device, dtype)
    if master:
        asked, derived = run.config.pretrain, " (derived from depth)"
        print(f"pretrain: {model.num_params():,} parameters, "
              f"{tokens_per_step:,} tokens/step{derived if asked.batch_tokens == -1 else ''} "
              f"({world} x {grad_accum} x {pc.batch_size} x {seq_len}), "
              f"{pc.steps:,} steps{derived if asked.steps == 0 else ''}, device {device}, "
              f"{'bf16 autocast' if dtype else 'fp32'}{', compiled' if pc.compile else ''}, "
              f"{f'Muon (lr {pc.matrix_lr:g}) + ' if pc.matrix_lr else ''}AdamW (lr {lr:.3g}), "
              f"peak {peak / 1e12:.3g} TFLOP/s")
    baseline = unigram_bpb(train, val, byte_lengths.numpy(), seq_len, pc.eval_tokens) if master else float("nan")

    def val_bpb() -> float:
        return evaluate_bpb(model, val, byte_lengths, pc.batch_size, pc.eval_tokens, device, dtype)

    start_step, bpb = state.step, float("nan")
    last_saved = None if ckpt is None else state.step
    bar = progress_bar("pretrain", pc.steps, start_step, enabled=master)
    if ckpt is not None:  # last before the first step: the set-up above draws random numbers
        restore_rng(ckpt.rng)
    t_last = time.time()
    while state.step < pc.steps:
        step = state.step
        done = progress(step, pc.steps, state.elapsed, pc.max_minutes)
        if done >= 1:
            if master:
                print(f"pretrain: time budget of {pc.max_minutes} min reached at step {step}")
            break
        mult = lr_multiplier(done, step, pc.warmup_steps, pc.warmdown_frac)
        set_lr(optimizer, mult)
        loss_sum = torch.zeros((), device=device)
        for micro in range(grad_accum):
            position = row_position(step, micro, grad_accum, pc.batch_size, rank, world)
            x, y = train.batch(pc.seed, position, pc.batch_size, seq_len, tok.bos_id)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            if world > 1:  # all-reduce the gradients once, after the last micro-batch
                fwd.require_backward_grad_sync = micro == grad_accum - 1
            with autocast(device, dtype):
                loss = fwd(x, y) / grad_accum
            loss.backward()
            loss_sum += loss.detach()
        if world > 1:  # the mean over ranks, for the log; every rank sees the same value for the NaN guard
            dist.all_reduce(loss_sum)
            loss_sum /= world
        loss_value = loss_sum.item()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        check_finite(loss_value, grad_norm, step + 1, ckpt_dir, last_saved, "pretrain.lr / pretrain.matrix_lr")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step = step = step + 1
        dt = torch.tensor(time.time() - t_last, device=device)  # on the device: NCCL reduces CUDA tensors only
        if world > 1:  # rank 0's clock for every rank, so the time budget stops them at the same step
            dist.broadcast(dt, src=0)
        dt = dt.item()
        state.elapsed += dt
        tok_s = tokens_per_step / dt
        last = progress(step, pc.steps, state.elapsed, pc.max_minutes) >= 1
        evaluating = master and (step % pc.eval_every == 0 or last)
        if evaluating:  # a quick re-measure, off the clock, so a peak read low at a busy start does not stick
            peak = peak_flops(device, dtype, best=peak, repeats=3)
        row = dict(step=step, loss=round(loss_value, 4), lr_mult=round(mult, 4), grad_norm=round(grad_norm, 4),
                   tok_s=round(tok_s), mfu=round(flops_per_token * tok_s / world / peak, 4),
                   elapsed=round(state.elapsed, 2))
        if evaluating:
            bpb = val_bpb()
            row["val_bpb"] = round(bpb, 4)
            if pc.sample_tokens:
                row["samples"] = samples(model, tok, pc.sample_tokens, device, dtype)
                for text in row["samples"]:
                    tqdm.write(f"  step {step}: {text!r}")
        if master:
            log.write(**row)
            bar.set_postfix(loss=f"{loss_value:.3f}", bpb=f"{bpb:.3f}", tok_s=row["tok_s"], mfu=f"{row['mfu']:.0%}")
            bar.update(1)
        if master and (step % pc.ckpt_every == 0 or last):
            save_state(ckpt_dir, model, optimizer, state)
            last_saved = step
        t_last = time.time()  # evaluation and checkpoints are not training time
    bar.close()
    if not master:
        return {}
    step, elapsed = state.step, state.elapsed
    if step == start_step:  # nothing trained in this call (budget already spent): still leave a result
        save_state(ckpt_dir, model, optimizer, state)
    if not math.isfinite(bpb):
        bpb = val_bpb()
    print(f"pretrain: val bpb {bpb:.4f} (unigram baseline {baseline:.4f}) after {step} steps, {elapsed:.0f}s")
    tok_s = step * tokens_per_step / max(elapsed, 1e-9)
    peak = peak_flops(device, dtype, best=peak)  # a full measurement: the best of it, the start and the evaluations
    return {"steps": step, "val_bpb": round(bpb, 4), "unigram_bpb": round(baseline, 4),
            "train_seconds": round(elapsed, 1), "tokens": step * tokens_per_step, "params": model.num_params(),
            "tok_s": round(tok_s), "mfu": round(flops_per_token * tok_s / world / peak, 4), "processes": world}
