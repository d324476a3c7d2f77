"""Serving under load: time to first token and aggregate tokens/s at 1, 8 and 32 concurrent streaming clients.

    .venv/bin/python bench/serve.py [--run runs/tiny] [--quick]
    .venv/bin/python bench/serve.py --compare-url http://127.0.0.1:8080/v1 --compare-model NAME

`chatforge serve` runs in a subprocess (32 cache rows, one torch thread unless --threads); the clients are
coroutines of one thread here, each streaming one legacy completion of its own prompt (`/v1/completions`, greedy,
stopping only at <|endoftext|>, so replies run to max_tokens).
TTFT is the median over clients of request sent -> first text chunk; aggregate tokens/s is all clients' completion
tokens (the usage the server reports) over the wall time from the first request sent to the last reply done.
Each level runs `--repeats` times; figures are medians. --compare-url runs the same load against another OpenAI
server on the same model (llama.cpp's, from llama-cpp-python's `server` extra, on the run's GGUF export) and
adds tok_s_32_vs_llamacpp. The last line is one JSON object.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["The king", "In the morning", "The government said", "Once upon a time", "The market", "She wrote",
         "Football fans", "The new film"]


async def stream_one(client: httpx.AsyncClient, url: str, model: str, prompt: str,
                     max_tokens: int) -> tuple[float, int]:
    """(seconds to the first text, completion tokens) of one streamed completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    t0, ttft, tokens = time.perf_counter(), None, 0
    async with client.stream("POST", f"{url}/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if ttft is None and line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                ttft = time.perf_counter() - t0
            if line.startswith('data: {"') and '"usage": {' in line:  # only the last chunk is parsed whole
                tokens = json.loads(line[6:])["usage"]["completion_tokens"]
    return ttft if ttft is not None else float("nan"), tokens


async def load(url: str, model: str, clients: int, max_tokens: int) -> dict:
    """`clients` streams at once, from one thread (a thread per client would take the server's CPU share)."""
    prompts = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(clients)]  # different prompts, different replies
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as client:
        t0 = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, url, model, p, max_tokens) for p in prompts),
                                       return_exceptions=True)
        wall = time.perf_counter() - t0
    for e in results:
        if isinstance(e, BaseException):
            print(f"  error: {e!r}", file=sys.stderr)
    ok = [r for r in results if not isinstance(r, BaseException)]
    tokens = sum(n for _, n in ok)
    return {"ttft_ms": 1000 * statistics.median(t for t, _ in ok) if ok else None, "tok_s": tokens / wall,
            "errors": len(results) - len(ok)}


async def measure(url: str, model: str, levels: list[int], max_tokens: int, repeats: int) -> dict:
    await load(url, model, 1, 4)  # the server loads the model on its first request
    out = {}
    for clients in levels:
        runs = [await load(url, model, clients, max_tokens) for _ in range(repeats)]
        out[clients] = {"ttft_ms": statistics.median(r["ttft_ms"] for r in runs if r["ttft_ms"] is not None),
                        "tok_s": statistics.median(r["tok_s"] for r in runs), "errors": sum(r["errors"] for r in runs)}
        print(f"{clients:3d} clients: ttft {out[clients]['ttft_ms']:7.1f} ms, {out[clients]['tok_s']:7.1f} tok/s "
              f"aggregate, errors {out[clients]['errors']}", file=sys.stderr)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/tiny")
    ap.add_argument("--model", help="checkpoint stage (default: the most trained one, first in /v1/models)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="32 tokens, 1 repeat (< 2 minutes)")
    ap.add_argument("--threads", type=int, default=1, help="the server's torch threads")
    ap.add_argument("--compare-url", help="another OpenAI server's /v1 URL, for the same load (llama.cpp)")
    ap.add_argument("--compare-model", help="the model name that server expects")
    args = ap.parse_args()
    if args.quick:
        args.max_tokens, args.repeats = 32, 1
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([sys.executable, "-m", "chatforge", "serve", "--run", args.run, "--port", str(port),
                               "--batch", "32"], cwd=ROOT,
                              env=os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)})
    try:
        deadline = time.time() + 120
        while True:
            try:
                models = httpx.get(f"{url}/models", timeout=5).json()["data"]
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.time() > deadline:
                    sys.exit(f"the server did not start (exit code {server.poll()})")
                time.sleep(0.5)
        model = args.model or models[0]["id"]
        print(f"serving {args.run} ({model}), {args.max_tokens} new tokens per client, {args.threads} thread(s), "
              f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
        ours = asyncio.run(measure(url, model, [1, 8, 32], args.max_tokens, args.repeats))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = {"run": args.run, "model": model, "max_tokens": args.max_tokens, "threads": args.threads,
              "load_average": round(os.getloadavg()[0], 1), "ttft_ms_1": round(ours[1]["ttft_ms"], 1),
              "ttft_ms_32": round(ours[32]["ttft_ms"], 1), "tok_s_1": round(ours[1]["tok_s"], 1),
              "tok_s_8": round(ours[8]["tok_s"], 1), "tok_s_32": round(ours[32]["tok_s"], 1),
              "tok_s_32_vs_1": round(ours[32]["tok_s"] / ours[1]["tok_s"], 2),
              "errors": sum(v["errors"] for v in ours.values())}
    if args.compare_url:
        theirs = asyncio.run(measure(args.compare_url.rstrip("/"), args.compare_model or model, [32],
                                     args.max_tokens, args.repeats))
        result["tok_s_32_vs_llamacpp"] = round(ours[32]["tok_s"] / theirs[32]["tok_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
