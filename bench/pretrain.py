"""chatforge's pretraining vs the classic nanoGPT recipe, on the same data, in one run.

- peak: the best bf16 (n x n) matmul FLOP/s measured here, the ceiling MFU is quoted against: read before,
  after, and at every evaluation during the run (off both clocks), and the best reading taken. On this shared
  2-core VM single readings ranged 188-218 GFLOP/s, which alone moves MFU by up to +-7%.
- learning speed: chatforge's tiny preset model (Llama-style, Muon + AdamW) and the reference each
  train for the same budget of training time on the same rows (same order, the tiny preset's
  tokens per step), stepped in turn so the shared machine's load falls on both alike, each with its
  own clock; val bits per byte every `eval_every` seconds of training time. The figure of merit is
  the time chatforge needs to reach the reference's final val bpb, over the reference's time.
- throughput: tokens/s and MFU of those same runs (training steps: forward, backward, clip,
  optimizer; the first step, which compiles, and the evaluations are off the clock).

The reference is written here, nanoGPT-style (read, not copied): GPT-2 blocks (LayerNorm with
biases, GELU MLP at 4x width, fused qkv), learned positions, tied input/output embeddings, AdamW
(weight decay 0.1 on matrices, betas 0.9/0.99, lr 1e-3 decaying by cosine to 1e-4 after 100 warm-up
steps: nanoGPT's recipe for small models, `config/train_shakespeare_char.py`). Its depth is chosen
so its parameter count is closest to chatforge's. Both use bf16 autocast where the CPU has it and
torch.compile (full mode); the clocks leave out the first step (compile warm-up) and evaluations.

    .venv/bin/python bench/pretrain.py [--quick] [--minutes 10] [--run runs/NAME]

Without --run the sample corpus is prepared (data + tokenizer stages, seconds) in a temporary run.
Last line: JSON with mfu_vs_measured_peak, tok_s_vs_reference, time_to_reference_bpb_ratio and the
figures behind them.
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from chatforge.config import adamw_lr, make_config
from chatforge.model.gpt import GPT
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory
from chatforge.pretrain.bpb import evaluate_bpb
from chatforge.pretrain.horizon import resolve_pretrain
from chatforge.pretrain.mfu import measure_matmul_peak
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import TokenShards, row_position
from chatforge.train import lr_multiplier


class RefBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class RefGPT(nn.Module):
    """GPT-2 as nanoGPT writes it, with `cfg.seq_len` and the loss interface evaluate_bpb expects."""

    def __init__(self, vocab_size: int, seq_len: int, n_layer: int, n_embd: int, n_head: int):
        super().__init__()
        self.cfg = SimpleNamespace(vocab_size=vocab_size, seq_len=seq_len, n_layer=n_layer, n_embd=n_embd,
                                   n_head=n_head)
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(seq_len, n_embd)
        self.h = nn.ModuleList(RefBlock(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:  # residual projections scaled down by depth (GPT-2 paper)
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None, reduction: str = "mean"):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x)).float()
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1,
                               reduction=reduction)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix once

    def flops_per_token(self) -> int:
        """The same accounting as chatforge's GPT.flops_per_token (6 per matmul weight + attention);
        the tied matrix counts once, as the head (the embedding is a lookup)."""
        c = self.cfg
        matmul = sum(p.numel() for n, p in self.named_parameters() if p.dim() == 2 and n.startswith("h."))
        return 6 * (matmul + c.vocab_size * c.n_embd) + 12 * c.n_layer * c.n_embd * c.seq_len


def reference_optimizer(model: RefGPT, lr: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.99))


def reference_lr(step: int, progress: float, lr: float = 1e-3, warmup: int = 100) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr / 10 + 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))) * (lr - lr / 10)


def matched_reference(cfg) -> RefGPT:
    """The GPT-2-block depth at chatforge's width whose parameter count is closest to chatforge's."""
    target = GPT(cfg).num_params()
    candidates = [RefGPT(cfg.vocab_size, cfg.seq_len, n, cfg.n_embd, cfg.n_head) for n in range(1, 3 * cfg.n_layer)]
    return min(candidates, key=lambda m: abs(m.num_params() - target))


class Trainer:
    """One model's training: the same rows, precision and clocks for both contestants."""

    def __init__(self, name, model, optimizer, set_lr, data, compile_: bool, dtype):
        self.name, self.model, self.optimizer, self.set_lr, self.data = name, model, optimizer, set_lr, data
        self.fwd = torch.compile(model) if compile_ else model
        self.dtype, self.step = dtype, 0

    def train_step(self, progress: float) -> None:
        d = self.data
        self.set_lr(self.optimizer, self.step, progress)
        for micro in range(d.grad_accum):
            position = row_position(self.step, micro, d.grad_accum, d.batch_size)
            x, y = d.train.batch(d.seed, position, d.batch_size, d.seq_len, d.bos)
            with autocast("cpu", self.dtype):
                loss = self.fwd(torch.from_numpy(x), torch.from_numpy(y)) / d.grad_accum
            loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1

    def val_bpb(self) -> float:
        d = self.data
        return evaluate_bpb(self.model, d.val, d.byte_lengths, d.batch_size, d.eval_tokens, "cpu", self.dtype)

    def start(self, budget: float, eval_every: float) -> None:
        """Begin a budgeted run; `curve` collects (training seconds, step, val bpb) points."""
        self.train_step(0.0)  # compile warm-up: outside the clock (both models pay it alike)
        self.budget, self.eval_every, self.elapsed, self.next_eval = budget, eval_every, 0.0, eval_every
        self.curve = [(0.0, self.step, round(self.val_bpb(), 4))]

    @property
    def done(self) -> bool:
        return self.elapsed >= self.budget

    def advance(self) -> None:
        t0 = time.perf_counter()
        self.train_step(self.elapsed / self.budget)
        self.elapsed += time.perf_counter() - t0
        if self.elapsed >= self.next_eval or self.done:
            self.curve.append((round(self.elapsed, 2), self.step, round(self.val_bpb(), 4)))
            self.next_eval += self.eval_every
            print(f"  {self.name}: {self.elapsed:6.1f}s step {self.step:5d} val bpb {self.curve[-1][2]:.4f}",
                  flush=True)


def time_to_reach(curve: list[tuple[float, int, float]], target: float) -> float | None:
    """The first time the curve reaches `target`, interpolated linearly between evaluations."""
    for (t0, _, b0), (t1, _, b1) in zip(curve, curve[1:], strict=False):
        if b1 <= target:
            return t1 if b0 == b1 else t0 + (t1 - t0) * (b0 - target) / (b0 - b1)
    return None


def prepare_run(path: Path, preset: str = "tiny") -> None:
    """A run with the sample corpus's data and tokenizer stages done (what a training bench reads)."""
    for stage in ("data", "tokenizer"):
        subprocess.run([sys.executable, "-m", "chatforge", stage, "--run", str(path), "--preset", preset], check=True,
                       stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="15 s budgets, no compile: a smoke run (< 2 minutes)")
    ap.add_argument("--minutes", type=float, default=10.0, help="training budget per model (full mode)")
    ap.add_argument("--eval-every", type=float, default=30.0, help="seconds of training between evaluations")
    ap.add_argument("--ref-lr", type=float, default=1e-3, help="the reference's peak AdamW LR (nanoGPT's: 1e-3)")
    ap.add_argument("--run", help="an existing run directory with tokenizer/ and tokens/ (default: prepare one)")
    args = ap.parse_args()
    keep_freed_memory()  # as the pretrain stage does; both contestants share the process, so both gain
    budget = 15.0 if args.quick else args.minutes * 60
    eval_every = 5.0 if args.quick else args.eval_every
    compile_ = not args.quick

    tmp = None
    if args.run:
        run_dir = Path(args.run)
    else:
        tmp = tempfile.TemporaryDirectory()
        run_dir = Path(tmp.name) / "bench"
        prepare_run(run_dir)
    cfg = make_config("tiny")
    pc = cfg.pretrain
    tok = load_tokenizer(run_dir / "tokenizer")
    if tok.vocab_size != cfg.model.vocab_size:
        raise SystemExit(f"{run_dir}'s tokenizer has {tok.vocab_size} tokens, the tiny preset {cfg.model.vocab_size}")
    dtype = autocast_dtype("auto", "cpu")
    data = SimpleNamespace(train=TokenShards(run_dir / "tokens", "train"), val=TokenShards(run_dir / "tokens", "val"),
                           seed=pc.seed, batch_size=pc.batch_size, seq_len=cfg.model.seq_len, bos=tok.bos_id,
                           grad_accum=resolve_pretrain(pc, cfg.model, 1).grad_accum,
                           byte_lengths=torch.tensor(tok.byte_lengths()),
                           eval_tokens=16_384 if args.quick else pc.eval_tokens)
    threads = torch.get_num_threads()
    print(f"bench/pretrain: {threads} threads, {'bf16 autocast' if dtype else 'fp32'}, compile {compile_}, "
          f"{data.grad_accum} x {data.batch_size} x {data.seq_len} tokens per step, budget {budget:.0f}s per model")

    readings: list[float] = []

    def measured_peak(repeats: int = 3 if args.quick else 10) -> float:
        readings.append(measure_matmul_peak("cpu", dtype or torch.float32, repeats=repeats))
        return max(readings)

    print(f"measured {'bf16' if dtype else 'fp32'} matmul peak: {measured_peak() / 1e9:.0f} GFLOP/s")

    def chatforge_trainer() -> Trainer:
        torch.manual_seed(pc.seed)
        model = GPT(cfg.model)
        opt = make_optimizer(model, pc.lr or adamw_lr(cfg.model.n_embd), pc.weight_decay, pc.matrix_lr)

        def set_lr(o, step, progress):
            for g in o.param_groups:
                g["lr"] = g["base_lr"] * lr_multiplier(progress, step, pc.warmup_steps, pc.warmdown_frac)
        return Trainer("chatforge", model, opt, set_lr, data, compile_, dtype)

    def reference_trainer() -> Trainer:
        torch.manual_seed(pc.seed)
        model = matched_reference(cfg.model)

        def set_lr(o, step, progress):
            for g in o.param_groups:
                g["lr"] = reference_lr(step, progress, args.ref_lr)
        return Trainer("reference", model, reference_optimizer(model, args.ref_lr), set_lr, data, compile_, dtype)

    # Learning speed: fresh models, the same budget each, stepped in turn so that the machine's load
    # (2 shared cores) falls on both alike; each keeps its own clock.
    runs = [chatforge_trainer(), reference_trainer()]
    for t in runs:
        t.start(budget, eval_every)
    while not all(t.done for t in runs):
        for t in runs:
            if not t.done:
                evaluations = len(t.curve)
                t.advance()
                if len(t.curve) > evaluations:  # off the clocks, like the evaluation itself
                    measured_peak(repeats=3)
    peak = measured_peak()  # the best the machine showed before, during and after the run
    print(f"matmul peak: best {peak / 1e9:.0f} GFLOP/s of {len(readings)} readings "
          f"(lowest {min(readings) / 1e9:.0f})")
    out: dict = {"threads": threads, "dtype": "bf16" if dtype else "fp32", "compile": compile_, "ref_lr": args.ref_lr,
                 "peak_gflops": round(peak / 1e9, 1), "peak_readings": len(readings),
                 "lowest_peak_gflops": round(min(readings) / 1e9, 1)}
    curves = {t.name: t.curve for t in runs}
    for t in runs:
        tok_s = (t.step - 1) * data.grad_accum * data.batch_size * data.seq_len / t.elapsed
        out[t.name] = {"params": t.model.num_params(), "layers": t.model.cfg.n_layer, "width": t.model.cfg.n_embd,
                       "flops_per_token": t.model.flops_per_token(), "tok_s": round(tok_s),
                       "mfu": round(t.model.flops_per_token() * tok_s / peak, 4), "steps": t.step,
                       "final_val_bpb": t.curve[-1][2], "curve": t.curve}
        print(f"{t.name}: {({k: v for k, v in out[t.name].items() if k != 'curve'})}")
    ref_final = curves["reference"][-1][2]
    reach = time_to_reach(curves["chatforge"], ref_final)
    out["chatforge"]["time_to_reference_bpb"] = reach and round(reach, 1)
    out.update(mfu_vs_measured_peak=out["chatforge"]["mfu"],
               tok_s_vs_reference=round(out["chatforge"]["tok_s"] / out["reference"]["tok_s"], 3),
               time_to_reference_bpb_ratio=reach and round(reach / curves["reference"][-1][0], 3),
               budget_s=budget)
    if tmp:
        tmp.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
