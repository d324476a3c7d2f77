"""Terminal chat and base-model completion on the engine: streamed text, tool calls run and shown
(dim), /commands to change the sampling settings mid-conversation, tokens/s after each answer."""

import dataclasses
import sys
from pathlib import Path

from chatforge.errors import UserError
from chatforge.infer.engine import Engine, GenStats, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT
from chatforge.runs import checkpoint_stage
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import parse_reply, render_prompt

SETTINGS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_tokens", "seed")
HELP = ("commands: " + " ".join(f"/{s} VALUE" for s in SETTINGS) +
        " /system TEXT (and start over) /clear (new conversation) /settings /quit; Ctrl-D also quits")
TOOL_TOKENS = ("<|python_start|>", "<|python_end|>", "<|search_start|>", "<|search_end|>")
DIM, RESET = "\x1b[2m", "\x1b[0m"


def stats_line(stats: GenStats) -> str:
    tools = f", {stats.tool_calls} tool calls" if stats.tool_calls else ""
    return (f"[{stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tokens/s, first token {1000 * stats.ttft:.0f} ms"
            f"{tools}]")


def load_chat_model(run_path: Path, stage: str | None = None, device: str = "cpu") -> tuple[GPT, Tokenizer, str]:
    """A run's checkpoint `stage` (base, sft, probe or rl; None: the most trained one present), its tokenizer and its
    stage."""
    stage = checkpoint_stage(run_path, stage)
    return load_model(Path(run_path) / stage, device), load_tokenizer(Path(run_path) / "tokenizer"), stage


def chat_params(tok: Tokenizer, params: SamplingParams) -> SamplingParams:
    """An assistant turn ends at <|im_end|> (or a stray <|endoftext|>)."""
    return dataclasses.replace(params, stop_ids=(tok.special("<|im_end|>"), tok.bos_id))


def answer(engine: Engine, messages: list[dict], params: SamplingParams, out=None) -> tuple[str | list, GenStats]:
    """Generate the assistant's turn, streaming it to `out` (tool calls and outputs dim on a
    terminal); returns (content, stats), content as parts when the answer used a tool."""
    tok = engine.tok
    dim = out is not None and out.isatty()
    marks = {tok.special(t) for t in TOOL_TOKENS}
    events = engine.stream(render_prompt(tok, messages), chat_params(tok, params))
    req = None
    for event in events:
        req = event.request
        if out is not None and event.text:
            shade = dim and (event.forced or any(t in marks for t in event.tokens))
            out.write(f"{DIM}{event.text}{RESET}" if shade else event.text)
            out.flush()
    try:
        content = parse_reply(tok, req.tokens)
    except ValueError:  # cut off inside a tool call: keep the text
        content = req.text
    return content, req.stats


def apply_command(text: str, params: SamplingParams) -> SamplingParams:
    """'/top_p 0.9' -> params with top_p=0.9 (validated); 'none' clears the seed."""
    name, _, value = text[1:].partition(" ")
    if name not in SETTINGS:
        raise UserError(f"unknown command /{name}; {HELP}")
    if not value.strip():
        raise UserError(f"/{name} needs a value (now {getattr(params, name)})")
    value = value.strip()
    return dataclasses.replace(params, **{name: None if name == "seed" and value == "none" else value})


def chat_loop(engine: Engine, prompt: str | None, system: str | None, params: SamplingParams) -> None:
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    if prompt is not None:  # one question, one answer: scriptable
        messages.append({"role": "user", "content": prompt})
        _, stats = answer(engine, messages, params, sys.stdout)
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
            messages = messages[:1] if messages and messages[0]["role"] == "system" else []
            continue
        if text == "/settings":
            print({s: getattr(params, s) for s in SETTINGS}, "system:", repr(system))
            continue
        if text.startswith("/system"):
            system = text[len("/system") :].strip() or None
            messages = [{"role": "system", "content": system}] if system else []
            print(f"[system prompt {'set' if system else 'cleared'}; new conversation]")
            continue
        if text.startswith("/"):
            try:
                params = apply_command(text, params)
            except ValueError as e:
                print(f"[{e}]")
            continue
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        print("assistant> ", end="", flush=True)
        try:
            content, stats = answer(engine, messages, params, sys.stdout)
        except ValueError as e:  # the conversation outgrew the context
            print(f"\n[{e}; use /clear]")
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": content})
        print("\n" + stats_line(stats))


def complete(engine: Engine, prompt: str, params: SamplingParams, n: int = 1, out=None) -> list[str]:
    """Base-model completion of `prompt` (after <|endoftext|>, as in pretraining), n samples batched;
    a single sample streams to `out`."""
    tok = engine.tok
    ids = [tok.bos_id, *tok.encode(prompt)]
    params = dataclasses.replace(params, stop_ids=(*params.stop_ids, tok.bos_id))
    if n == 1:
        text = []
        for event in engine.stream(ids, params):
            text.append(event.text)
            if out is not None:
                out.write(event.text)
                out.flush()
        return ["".join(text)]
    seeds = [None if params.seed is None else params.seed + i for i in range(n)]  # n different samples, reproducible
    reqs = [engine.submit(ids, dataclasses.replace(params, seed=seed)) for seed in seeds]
    for _ in engine.run():
        pass
    return [r.text for r in reqs]
