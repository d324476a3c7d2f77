"""SFT's training tokens/s against pretraining's, on the same model, in one run.

Both train the preset's model from the same initial weights, stepped in turn (ABAB) so that the shared machine's
load falls on both alike, each with its own clock: pretraining on its token rows (batch_size x seq_len, as the
pretrain stage reads them), SFT on the mixture's conversations packed by posttrain/sft.py (batch_size rows of
max_len = seq_len, attention kept inside each conversation). SFT's tokens are the conversations' own, padding
excluded. Both steps are forward, backward, clip and optimizer step, compiled when the preset compiles pretraining;
the first steps (compiling, warming up) are off the clocks.

    .venv/bin/python bench/sft.py [--quick] [--preset tiny] [--steps 30] [--run runs/NAME]

--quick: the micro preset, 20 measured steps each (< 2 minutes). Without --run the sample corpus is prepared
(data + tokenizer stages) in a temporary run; with it, the mixture's conversations go to RUN/bench_data/.
Last line: JSON with sft_tok_s, pretrain_tok_s, ratio (goal >= 0.8) and the packing figures behind them.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from pretrain import prepare_run  # bench/pretrain.py, beside this script

from chatforge.config import adamw_lr
from chatforge.model.gpt import GPT
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory
from chatforge.posttrain.sft import collate, packed_loss, prepare_data
from chatforge.runs import open_run
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import TokenShards
from chatforge.train import batch_indices

WARMUP = 3  # steps per side off the clock: compiling, and the allocator's first passes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="micro preset, 20 steps each: a smoke run (< 2 minutes)")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=30, help="measured steps per side")
    ap.add_argument("--run", help="an existing run directory with tokenizer/ and tokens/ (default: prepare one)")
    args = ap.parse_args()
    preset, steps = ("micro", 20) if args.quick else (args.preset, args.steps)
    keep_freed_memory()
    tmp = None
    if args.run:
        run_dir = Path(args.run)
    else:
        tmp = tempfile.TemporaryDirectory()
        run_dir = Path(tmp.name) / "bench"
        prepare_run(run_dir, preset)
    cfg = open_run(run_dir, save=False).config
    pc, seq_len = cfg.pretrain, cfg.model.seq_len
    # SFT rows as long as pretraining's and as many a step: the same tensor shapes
    run = open_run(run_dir, overrides={"sft.max_len": str(seq_len), "sft.batch_size": str(pc.batch_size)}, save=False)
    tok = load_tokenizer(run_dir / "tokenizer")
    shards = TokenShards(run_dir / "tokens", "train")
    rows, _, stats = prepare_data(run, tok, out="bench")  # writes RUN/bench_data/, not the run's sft_data/
    dtype = autocast_dtype(pc.dtype, "cpu")

    def trainer(loss_of):
        torch.manual_seed(pc.seed)
        model = GPT(cfg.model)
        opt = make_optimizer(model, pc.lr or adamw_lr(cfg.model.n_embd), pc.weight_decay, pc.matrix_lr)
        return {"model": model, "opt": opt, "loss": torch.compile(loss_of) if pc.compile else loss_of,
                "step": 0, "seconds": 0.0, "tokens": 0}

    def pretrain_batch(t):
        x, y = shards.batch(pc.seed, t["step"] * pc.batch_size, pc.batch_size, seq_len, tok.bos_id)
        return (torch.from_numpy(x), torch.from_numpy(y)), pc.batch_size * seq_len

    def sft_batch(t):
        batch = [rows[i] for i in batch_indices(len(rows), t["step"] * pc.batch_size, pc.batch_size, pc.seed)]
        return collate(batch, seq_len), sum(len(ids) - 1 for row in batch for ids, _ in row)

    sides = {"pretrain": (trainer(lambda m, x, y: m(x, y)), pretrain_batch),
             "sft": (trainer(packed_loss), sft_batch)}
    print(f"bench/sft: {preset}, {torch.get_num_threads()} threads, {'bf16' if dtype else 'fp32'}, compile "
          f"{pc.compile}, {pc.batch_size} x {seq_len} tokens a step; SFT rows {stats['rows']} "
          f"({stats['row_fill']:.1%} full), {stats['too_long']} conversations longer than a row")
    for i in range(WARMUP + steps):
        for t, batch_of in sides.values():
            tensors, tokens = batch_of(t)
            t0 = time.perf_counter()
            with autocast("cpu", dtype):
                loss = t["loss"](t["model"], *tensors)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(t["model"].parameters(), 1.0)
            t["opt"].step()
            t["opt"].zero_grad(set_to_none=True)
            if i >= WARMUP:
                t["seconds"] += time.perf_counter() - t0
                t["tokens"] += tokens
            t["step"] += 1
    tok_s = {name: round(t["tokens"] / t["seconds"]) for name, (t, _) in sides.items()}
    out = {"preset": preset, "steps": steps, "compile": pc.compile, "sft_tok_s": tok_s["sft"],
           "pretrain_tok_s": tok_s["pretrain"], "ratio": round(tok_s["sft"] / tok_s["pretrain"], 3),
           "row_fill": stats["row_fill"], "sft_rows": stats["rows"], "too_long": stats["too_long"]}
    if tmp:
        tmp.cleanup()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
