"""Answering tasks' examples with a model and scoring the replies with the tasks' own checkers: the one place
SFT's periodic checks, probing, RL's held-out figures, the think-first experiment and `chatforge eval chat` get
their figures from.

Answers are generated as `chatforge chat` makes them (greedy, python on, search where the caller passes a run's
index); an example marked "tools": False is answered by an engine without tools. A prompt that fills the context
gets no reply: it is counted per task (too_long_rate), not scored.
"""

from chatforge.config import Config
from chatforge.infer.chat import chat_params
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.infer.tools import Tools
from chatforge.model.gpt import GPT
from chatforge.tasks import TASKS, parse_mixture
from chatforge.tasks.common import Task, reply_text
from chatforge.tokenizer.bpe import Tokenizer
from chatforge.tokenizer.chat import parse_reply, render_prompt

SAMPLES = 3  # per task, kept with their scores for the report
MAX_TOKENS = 96  # a reference answer with a tool call and the sentence after it
MAX_BATCH = 16


def eval_examples(config: Config, n: int) -> list[tuple[Task, dict]]:
    """n held-out examples of every task in `sft.mixture`."""
    tasks = [TASKS[s.name] for s in parse_mixture(config.sft.mixture) if not s.is_file]
    return [(task, ex) for task in tasks for ex in task.examples("test", n, config.sft.seed, config)]


def mean(values: list[float]) -> float:
    return round(sum(values) / max(len(values), 1), 4)


def score_examples(model: GPT, tok: Tokenizer, examples: list[tuple[Task, dict]], tools: Tools | None, identity: str,
                   questions: tuple[str, ...] = ()) -> dict:
    """Greedy replies to `examples` (and to `questions`, unscored) with `tools`, or without tools for an example
    marked "tools": False, all in one batch per engine, scored; `identity` is the name the assistant answers to:
    {"figures": {key: mean in 0..1}, "tasks": {name: {"score", "n", "unfinished_rate", ...its metrics}},
    "samples": [{"task", "prompt", "reply", "score"}], "answers": [[question, reply], ...],
    "scores": [score or None where not asked, one per example], "replies": [reply (text or parts), one per example]}."""
    params = chat_params(tok, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
    prompts = [(ex.get("tools", True), render_prompt(tok, ex["messages"][:-1])) for _, ex in examples]
    prompts += [(True, render_prompt(tok, [{"role": "user", "content": q}])) for q in questions]
    requests: list = [None] * len(prompts)
    for with_tools in (True, False):
        # a prompt that fills the context gets no reply: not scored, counted per task (too_long_rate)
        todo = [i for i, (t, ids) in enumerate(prompts) if t == with_tools and len(ids) < model.cfg.seq_len]
        if todo:
            engine = Engine(model, tok, max_batch=MAX_BATCH, tools=tools if with_tools else None)
            for i, req in zip(todo, engine.generate([prompts[i][1] for i in todo], params), strict=True):
                requests[i] = req
    replies = [reply_of(tok, req) for req in requests]
    values: dict[str, list[float]] = {}
    per_task: dict[str, dict[str, list[float]]] = {}
    samples = []
    scores: list[float | None] = []
    for (task, ex), reply, req in zip(examples, replies, requests, strict=False):
        mine = per_task.setdefault(task.name, {"score": [], "too_long_rate": []})
        mine["too_long_rate"].append(float(req is None))
        if req is None:
            scores.append(None)
            continue
        score = task.score(ex, reply)
        scores.append(score)
        figures = {**task.metrics(ex, reply), "unfinished_rate": float(req.stats.stop_reason == "length")}
        if task.name != "identity":
            figures.setdefault("identity_false_rate", float(names_itself(task, reply, identity)))
        mine["score"].append(score)
        for key, value in figures.items():
            values.setdefault(key, []).append(value)
            mine.setdefault(key, []).append(value)
        if len(mine["score"]) <= SAMPLES:
            samples.append({"task": task.name, "prompt": ex["messages"][-2]["content"], "reply": reply_text(reply),
                            "score": score})
    return {"figures": {key: mean(v) for key, v in values.items()},
            "tasks": {name: {"n": len(f["score"]), **{key: mean(v) for key, v in f.items()}}
                      for name, f in per_task.items()},
            "samples": samples,
            "answers": [[q, reply_text(r)] for q, r in zip(questions, replies[len(examples):], strict=True)],
            "scores": scores, "replies": replies[: len(examples)]}


def names_itself(task: Task, reply: str | list[dict], identity: str) -> bool:
    """The assistant's name in its reply to another task's prompt: `eval chat`'s identity_false_rate, and a reward
    of 0 in RL (rl/grpo.py)."""
    return task.name != "identity" and bool(identity) and identity.lower() in reply_text(reply).lower()


def reply_of(tok: Tokenizer, req) -> str | list[dict]:
    """A finished request's reply as parts (or text), "" for a prompt that was not asked."""
    if req is None:
        return ""
    try:
        return parse_reply(tok, req.tokens)
    except ValueError:  # cut off inside a tool call, or a stray chat token: score the text
        return tok.decode(req.tokens)
