"""Terminal chat: multi-turn, streamed token by token, tokens/s after each answer."""

import sys
from pathlib import Path

from chatforge.infer.engine import GenStats, generate
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render_prompt

HELP = "commands: /clear (new conversation), /quit; Ctrl-D also quits"


def stats_line(stats: GenStats) -> str:
    return f"[{stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tokens/s, first token {1000 * stats.ttft:.0f} ms]"


def load_chat_model(run_path: Path, stage: str = "auto", device: str = "cpu") -> tuple[GPT, Tokenizer, str]:
    """The newest trained model of a run (sft, else base) and its tokenizer."""
    stages = ["sft", "base"] if stage == "auto" else [stage]
    for s in stages:
        if (Path(run_path) / s / "model.safetensors").exists():
            return load_model(Path(run_path) / s, device), load_tokenizer(Path(run_path) / "tokenizer"), s
    raise FileNotFoundError(f"no {' or '.join(stages)} checkpoint in {run_path}; run `chatforge speedrun` first")


def reply(model: GPT, tok: Tokenizer, messages: list[dict], temperature: float, top_k: int, max_tokens: int,
          seed: int | None = None, out=None) -> tuple[str, GenStats]:
    """Generate the assistant's answer, writing it to `out` as it streams; returns (text, stats)."""
    stats = GenStats()
    ids = generate(model, render_prompt(tok, messages), max_tokens, temperature, top_k,
                   stop_ids=(tok.special("<|im_end|>"), tok.bos_id), seed=seed, stats=stats)
    pieces = []
    for piece in tok.decode_stream(ids):
        pieces.append(piece)
        if out is not None:
            out.write(piece)
            out.flush()
    return "".join(pieces), stats


def chat_loop(model: GPT, tok: Tokenizer, prompt: str | None, system: str | None, temperature: float,
              top_k: int, max_tokens: int, seed: int | None) -> None:
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:  # one question, one answer: scriptable
        messages.append({"role": "user", "content": prompt})
        _, stats = reply(model, tok, messages, temperature, top_k, max_tokens, seed, sys.stdout)
        print()
        print(stats_line(stats), file=sys.stderr)
        return
    print(HELP)
    while True:
        try:
            text = input("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if text in ("/quit", "/exit"):
            return
        if text == "/clear":
            messages = messages[:1] if system else []
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        try:
            answer, stats = reply(model, tok, messages, temperature, top_k, max_tokens, seed, sys.stdout)
        except ValueError as e:  # the conversation outgrew the context
            print(f"\n[{e}; use /clear]")
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": answer})
        print("\n" + stats_line(stats))
