"""Decode speed of the engine against HF transformers `generate` on the same weights, and batching.

    .venv/bin/python bench/inference.py [--run runs/tiny] [--quick]
    .venv/bin/python bench/inference.py --compare-ref /tmp/old --no-compile   # old (a git worktree) vs this checkout

Figures (greedy, one thread unless --threads):
  decode tokens/s at batch 1, as (N - 1) / (time for N new tokens - time for 1), so prefill and
  start-up cancel out, for: the engine; HF `generate` (the weights loaded into Qwen3ForCausalLM /
  LlamaForCausalLM via chatforge/export/hf.py); and the model's own KV-cache loop (GPT.forward with
  model/gpt.py's KVCache, what the engine replaced) as a second anchor.
  aggregate tokens/s with 16 concurrent requests (16 different prompts through the engine's
  continuous batching) vs the same requests one at a time, end to end.
  llama.cpp (llama-cpp-python, the dev extra) on the same weights exported as an f32 GGUF
  (chatforge/export/gguf.py), same threads: null without llama-cpp-python or the run's tokenizer.
The anchors run interleaved with ours, `--repeats` times; rates are medians, ratios the median of
the per-repeat ratios (the machine is shared: load drifts between repeats), with the load average.
--compare-ref PATH runs these same measurements on the chatforge package of another checkout and on this
one, in alternating subprocesses of one repeat each (old, new, then new, old, ...), and reports both sides'
figures (medians) and new/old ratios (the median of the per-pair ratios).
The last line is one JSON object.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, os.environ.get("CHATFORGE_BENCH_ROOT") or str(ROOT))  # the package --compare-ref measures
from chatforge.config import make_config  # noqa: E402
from chatforge.export.hf import to_hf_model  # noqa: E402
from chatforge.infer.engine import Engine, SamplingParams  # noqa: E402
from chatforge.model.checkpoint import load_model  # noqa: E402
from chatforge.model.gpt import GPT, KVCache  # noqa: E402


def load(run: str | None, stage: str) -> tuple[GPT, str]:
    if run and (Path(run) / stage / "model.safetensors").exists():
        return load_model(Path(run) / stage).eval(), f"{run}/{stage}"
    torch.manual_seed(0)  # speed does not depend on what the weights say: the tiny preset's shapes
    return GPT(make_config("tiny").model).eval(), "random init, tiny preset shapes"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours(engine: Engine, prompts: list[list[int]], n: int) -> int:
    reqs = engine.generate(prompts, SamplingParams(max_tokens=n, temperature=0))
    return sum(r.stats.new_tokens for r in reqs)


@torch.no_grad()
def kv_loop(model: GPT, prompt: list[int], n: int) -> None:
    cache = KVCache(model.cfg, 1, len(prompt) + n)
    logits = model(torch.tensor([prompt]), cache=cache)[0, -1]
    for _ in range(n - 1):
        logits = model(logits.argmax().view(1, 1), cache=cache)[0, -1]


@torch.no_grad()
def hf_generate(hf, prompt: list[int], n: int) -> None:
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False)  # no eos: exactly n tokens
    assert out.size(1) == len(prompt) + n


def llamacpp_model(run: str | None, model: GPT, threads: int):
    """llama.cpp on the model's f32 GGUF (the run's tokenizer goes into the file) with a float32 KV cache like the
    engine's, or None where it cannot run."""
    try:
        import llama_cpp

        from chatforge.export.gguf import write_gguf
        from chatforge.tokenizer.bpe import load_tokenizer
    except ImportError:
        return None
    if not run or not (Path(run) / "tokenizer" / "tokenizer.tiktoken").exists():
        return None
    path = Path(tempfile.mkdtemp()) / "bench-f32.gguf"
    write_gguf(model, load_tokenizer(Path(run) / "tokenizer"), path, "f32", chat=False, name="bench")
    return llama_cpp.Llama(model_path=str(path), n_ctx=model.cfg.seq_len, n_threads=threads, n_threads_batch=threads,
                           type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)


def llamacpp_generate(llm, prompt: list[int], n: int) -> None:
    llm.reset()
    for i, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0)):
        if i + 1 == n:
            return


def decode_rate(fn, n: int) -> float:
    """(n - 1) new tokens per second once the first one is out."""
    return (n - 1) / max(timed(lambda: fn(n)) - timed(lambda: fn(1)), 1e-9)


def compare(args: argparse.Namespace) -> None:
    """These measurements, one repeat a subprocess, on the package at args.compare_ref (old) and on ours (new)."""
    roots = {"old": str(Path(args.compare_ref).resolve()), "new": str(ROOT)}
    cmd = [sys.executable, __file__, "--run", args.run, "--stage", args.stage, "--tokens", str(args.tokens),
           "--repeats", "1", "--threads", str(args.threads)] + (["--no-compile"] if args.no_compile else [])
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(args.repeats):
        for side in ("old", "new") if r % 2 == 0 else ("new", "old"):
            env = {**os.environ, "CHATFORGE_BENCH_ROOT": roots[side]}
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
        print(f"pair {r + 1}: " + ", ".join(f"{k} {runs['old'][-1][k]} -> {runs['new'][-1][k]}"
                                           for k in ("decode_vs_hf", "batch16_vs_batch1")), file=sys.stderr)
    result = {"old": roots["old"], "new": roots["new"]}
    for k in ("decode_vs_hf", "batch16_vs_batch1", "compiled_decode_vs_hf", "decode_vs_llamacpp_f32",
              "engine_decode_tok_s", "hf_generate_decode_tok_s", "batch1_tok_s", "batch16_tok_s"):
        pairs = [(o[k], n[k]) for o, n in zip(runs["old"], runs["new"], strict=True) if o.get(k) is not None]
        if pairs:
            result[k] = {"old": round(statistics.median(o for o, _ in pairs), 2),
                         "new": round(statistics.median(n for _, n in pairs), 2),
                         "new_over_old": round(statistics.median(n / o for o, n in pairs), 3)}
    result |= {"pairs": args.repeats, "new_tokens": args.tokens, "threads": args.threads,
               "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/tiny", help="run directory whose weights to use (else random init)")
    ap.add_argument("--stage", default="base")
    ap.add_argument("--tokens", type=int, default=200, help="new tokens per request")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd engine (~40 s to compile)")
    ap.add_argument("--quick", action="store_true", help="64 tokens, 2 repeats (< 2 minutes)")
    ap.add_argument("--compare-ref", metavar="PATH", help="another checkout to measure against (--repeats pairs)")
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.repeats = 64, 2
    if args.compare_ref:
        return compare(args)
    torch.set_num_threads(args.threads)
    model, source = load(args.run, args.stage)
    n = min(args.tokens, model.cfg.seq_len - 40)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, model.cfg.vocab_size, (8 + 2 * i,), generator=g).tolist() for i in range(16)]
    prompt = prompts[4]  # 16 tokens
    engine = Engine(model, max_batch=16)
    compiled = None if args.no_compile else Engine(model, max_batch=16, compile=True)
    hf = to_hf_model(model)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    llm = llamacpp_model(args.run, model, args.threads)
    print(f"weights: {source}, {model.num_params() / 1e6:.2f}M parameters; {n} new tokens; {args.threads} thread(s); "
          f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    ours(engine, [prompt], 8), hf_generate(hf, prompt, 8), kv_loop(model, prompt, 8)  # warm-up
    compile_s = timed(lambda: (ours(compiled, [prompt], 8), ours(compiled, prompts[:2], 8))) if compiled else None
    rates: dict[str, list[float]] = {"engine": [], "hf": [], "kv_loop": [], "batch1": [], "batch16": []}
    if compiled:
        rates |= {"compiled": [], "batch16_compiled": []}
    if llm:
        rates["llamacpp"] = []
        llamacpp_generate(llm, prompt, 8)  # warm-up
    for r in range(args.repeats):
        rates["engine"].append(decode_rate(lambda k: ours(engine, [prompt], k), n))
        if compiled:
            rates["compiled"].append(decode_rate(lambda k: ours(compiled, [prompt], k), n))
        rates["hf"].append(decode_rate(lambda k: hf_generate(hf, prompt, k), n))
        rates["kv_loop"].append(decode_rate(lambda k: kv_loop(model, prompt, k), n))
        if llm:
            rates["llamacpp"].append(decode_rate(lambda k: llamacpp_generate(llm, prompt, k), n))
        t0 = time.perf_counter()
        done = sum(ours(engine, [p], n) for p in prompts)  # the 16 requests one after another
        rates["batch1"].append(done / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        done = ours(engine, prompts, n)  # the same 16 together
        rates["batch16"].append(done / (time.perf_counter() - t0))
        if compiled:
            t0 = time.perf_counter()
            done = ours(compiled, prompts, n)
            rates["batch16_compiled"].append(done / (time.perf_counter() - t0))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()) + " tok/s", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rates.items()}

    def ratio(a: str, b: str) -> float:  # per repeat, so both sides ran under the same load, then the median
        return round(statistics.median(x / y for x, y in zip(rates[a], rates[b], strict=True)), 2)

    result = {
        "engine_decode_tok_s": round(med["engine"], 1),
        "engine_compiled_decode_tok_s": round(med["compiled"], 1) if compiled else None,
        "compile_s": round(compile_s, 1) if compiled else None,
        "hf_generate_decode_tok_s": round(med["hf"], 1),
        "kv_loop_decode_tok_s": round(med["kv_loop"], 1),
        "decode_vs_hf": ratio("engine", "hf"),
        "decode_vs_kv_loop": ratio("engine", "kv_loop"),
        "compiled_decode_vs_hf": ratio("compiled", "hf") if compiled else None,
        "llamacpp_f32_decode_tok_s": round(med["llamacpp"], 1) if llm else None,
        "decode_vs_llamacpp_f32": ratio("engine", "llamacpp") if llm else None,
        "compiled_decode_vs_llamacpp_f32": ratio("compiled", "llamacpp") if llm and compiled else None,
        "batch1_tok_s": round(med["batch1"], 1),
        "batch16_tok_s": round(med["batch16"], 1),
        "batch16_vs_batch1": ratio("batch16", "batch1"),
        "batch16_compiled_tok_s": round(med["batch16_compiled"], 1) if compiled else None,
        "params_m": round(model.num_params() / 1e6, 2),
        "new_tokens": n,
        "repeats": args.repeats,
        "threads": args.threads,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if llm:
        llm.close()  # freed here: at interpreter exit llama-cpp-python's finaliser finds its library unloaded
    print(json.dumps(result))


if __name__ == "__main__":
    main()
