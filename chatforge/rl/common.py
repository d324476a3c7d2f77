"""What the RL-stage modules share: the task a run practises on (a built-in one or a user's `module:function`),
replies read back from the engine, padded batches of token sequences and the per-token log-probabilities a
policy gives them, and preference pairs in TRL's chosen/rejected JSONL format."""

import importlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from chatforge.config import Config
from chatforge.errors import UserError
from chatforge.model.gpt import GPT, plain_attention, rope_tables
from chatforge.tasks import TASKS
from chatforge.tasks.common import Task

START = ("probe", "sft")  # the chat checkpoints RL-stage training starts from, the most trained first


def load_task(spec: str) -> Task:
    """A task of chatforge.tasks.TASKS by name, or "package.module:name" for a user's own: a Task, or a function
    (or class) that returns one when called with no arguments."""
    if spec in TASKS:
        return TASKS[spec]
    module, colon, name = spec.partition(":")
    if not colon:
        raise UserError(f"unknown task {spec!r}: one of {', '.join(TASKS)}, or module:function for your own")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load the task {spec!r}: {e}") from None
    task = obj() if callable(obj) and not isinstance(obj, Task) else obj
    if not isinstance(task, Task):
        raise UserError(f"{spec} gave a {type(task).__name__}, not a chatforge.tasks.common.Task")
    return task


def start_checkpoint(run_path: str | Path) -> str:
    """The checkpoint GRPO, DPO and the reward model start from (and `eval rl` compares against): probe's when the
    run has one (it says "I don't know" where sft guesses), else sft's."""
    for stage in START:
        if (Path(run_path) / stage / "model.safetensors").exists():
            return stage
    raise UserError(f"{run_path} has no chat model to start from (run `chatforge sft` first)")


def task_examples(task: Task, split: str, n: int, seed: int, config: Config, tools: bool) -> list[dict]:
    """n examples of `task` asked in the RL's tool setting: with tools on, those marked "tools": False (the
    calculator task's tools-off variant) are left out, with tools off only those; up to 4n drawn to find them."""
    out = [ex for ex in task.examples(split, 4 * n, seed, config) if ex.get("tools", True) == tools]
    if not out:
        raise UserError(f"{task.name} has no {split} example answered with tools {'on' if tools else 'off'}; "
                        f"set rl.tools={'false' if tools else 'true'}")
    return out[:n]


def pad(seqs: list[tuple[list[int], list[int]]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, mask) sequences -> inputs x (B, T), targets y (B, T) and a float mask (B, T) of the trained targets,
    right-padded to the longest."""
    T = max(len(ids) for ids, _ in seqs) - 1
    x = torch.zeros(len(seqs), T, dtype=torch.long)
    y = torch.zeros(len(seqs), T, dtype=torch.long)
    m = torch.zeros(len(seqs), T)
    for i, (ids, mask) in enumerate(seqs):
        n = len(ids) - 1
        x[i, :n], y[i, :n], m[i, :n] = torch.tensor(ids[:-1]), torch.tensor(ids[1:]), torch.tensor(mask[1:]).float()
    return x, y, m


def token_logprobs(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y[b, t] | x[b, :t+1]) under `model`, (B, T) in float32."""
    logits = model(x)
    return -F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape)


def answer_mask(masks: list[list[int]]) -> torch.Tensor:
    """(B, T) float: each answer's mask (1: a token the model chose), right-padded with 0 as answer_logprobs pads."""
    out = torch.zeros(len(masks), max(map(len, masks)))
    for b, m in enumerate(masks):
        out[b, : len(m)] = torch.tensor(m, dtype=torch.float)
    return out


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA with a boolean mask (True: attend); on CPU the plain formula, whose forward and backward took 3.6 vs
    6.9 ms for SDPA's kernel at GRPO's shapes (32 answers x 32 tokens over 98 keys)."""
    if not q.is_cpu:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    return plain_attention(q, k, v, mask)


def answer_logprobs(model: GPT, prompts: list[list[int]], answers: list[list[int]], owner: list[int]) -> torch.Tensor:
    """log p of each answer's tokens after its prompt, prompts[owner[b]], (B, T) in float32, right-padded with 0.
    Each prompt runs once for all the answers that share it (GRPO's group): its keys and values, with their
    gradient, serve every answer, and the head runs on answer tokens only. On tiny's calculator steps (4 prompts x
    8 answers) this halves the tokens a training step computes. Prompts are left-padded: RoPE scores depend only
    on relative positions, so a pad's shift changes nothing; pads are masked as keys (each still sees itself)."""
    device = model.embed_tokens.weight.device
    P, B, Lp, La = len(prompts), len(answers), max(map(len, prompts)), max(map(len, answers))
    xp = torch.zeros(P, Lp, dtype=torch.long)
    real = torch.zeros(P, Lp, dtype=torch.bool)
    for i, p in enumerate(prompts):
        xp[i, Lp - len(p):], real[i, Lp - len(p):] = torch.tensor(p), True
    xa, y = torch.zeros(B, La, dtype=torch.long), torch.zeros(B, La, dtype=torch.long)
    for b, a in enumerate(answers):
        xa[b, : len(a)], y[b, : len(a)] = torch.tensor(a), torch.tensor(a)
    xp, real, xa, y = xp.to(device), real.to(device), xa.to(device), y.to(device)
    own = torch.tensor(owner, device=device)
    w = model.weights()
    cos, sin = rope_tables(model.cfg, Lp + La, device)
    causal = torch.ones(Lp + La, Lp + La, dtype=torch.bool, device=device).tril()
    prompt_mask = (causal[:Lp, :Lp] & real[:, None, :]) | torch.eye(Lp, dtype=torch.bool, device=device)
    answer_keys = torch.cat([real[own][:, None, :].expand(B, La, Lp), causal[Lp:, Lp:].expand(B, La, La)], -1)
    kv = []

    def prefix(layer, q, k, v):
        kv.append((k, v))
        return masked_attention(q, k, v, prompt_mask[:, None])

    def after(layer, q, k, v):
        k, v = (torch.cat([t[own], u], 2) for t, u in zip(kv[layer], (k, v), strict=True))
        return masked_attention(q, k, v, answer_keys[:, None])

    hp = w.hidden(xp, cos[:Lp], sin[:Lp], prefix)
    ha = w.hidden(xa, cos[Lp:], sin[Lp:], after)
    h = torch.cat([hp[own, -1:], ha[:, :-1]], 1)  # the state before each answer token
    logits = w.logits(h)
    return -F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(B, La)


def read_pairs(path: str | Path) -> list[tuple[list[dict], list[dict]]]:
    """TRL's preference JSONL -> (chosen conversation, rejected conversation) as messages. A row is
    {"prompt", "chosen", "rejected"}, each a string (plain: the prompt a user turn, the answers assistant turns) or
    a list of messages (conversational); without "prompt", chosen and rejected are whole conversations."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no preference file {path}")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            prompt = row.get("prompt", [])
            prompt = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            sides = [[{"role": "assistant", "content": v}] if isinstance(v, str) else list(v)
                     for v in (row["chosen"], row["rejected"])]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"{path}:{n}: not a preference pair ({type(e).__name__}: {e}); expected "
                            f'{{"prompt": ..., "chosen": ..., "rejected": ...}}') from None
        pairs.append((prompt + sides[0], prompt + sides[1]))
    if not pairs:
        raise UserError(f"{path} holds no preference pairs")
    return pairs
