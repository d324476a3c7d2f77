"""Chat evaluation: a checkpoint's greedy answers to the held-out split of each task in the run's SFT mixture,
scored by the tasks' own checkers (chatforge/tasks/), and to a few fixed questions for the report. Files in the
mixture have no checker and are not evaluated.

Answers are generated as `chatforge chat` makes them: the python tool on, search over the run's index/ when it
has one; an example marked "tools": False is answered by an engine without tools. The figures are each task's
`Task.metrics` averaged per key, plus
  identity_false_rate  the assistant's name in replies to the other tasks' prompts (it should say it when asked)
  unfinished_rate      replies that hit the token limit instead of ending with <|im_end|>
and the top-level figures of eval/think.json and eval/probe.json when those experiments wrote them.
"""

import json
from pathlib import Path

from chatforge.config import Config
from chatforge.infer.chat import chat_params
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.infer.tools import Tools, tools_for_run
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT
from chatforge.model.precision import pick_device
from chatforge.runs import checkpoint_stage
from chatforge.tasks import TASKS, parse_mixture
from chatforge.tasks.common import Task, reply_text
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import parse_reply, render_prompt

EXAMPLES = 100  # held-out examples per task (eval.chat_examples=0): a score to 1/100
SAMPLES = 3  # per task, kept with their scores for the report
MAX_TOKENS = 96  # a reference answer with a tool call and the sentence after it
MAX_BATCH = 16
# eval/NAME.json files that experiments write (posttrain/think.py, probe.py): their figure -> the chat figure
EXPERIMENTS = {"think": {"think_first_acc": "think_first_acc", "answer_first_acc": "answer_first_acc"},
               "probe": {"refusal_invented_after": "refusal_invented", "known_acc_drop": "known_acc_drop"}}


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
    "samples": [{"task", "prompt", "reply", "score"}], "answers": [[question, reply], ...]}."""
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
    for (task, ex), reply, req in zip(examples, replies, requests, strict=False):
        mine = per_task.setdefault(task.name, {"score": [], "too_long_rate": []})
        mine["too_long_rate"].append(float(req is None))
        if req is None:
            continue
        score = task.score(ex, reply)
        figures = {**task.metrics(ex, reply), "unfinished_rate": float(req.stats.stop_reason == "length")}
        if task.name != "identity":
            figures.setdefault("identity_false_rate", float(identity.lower() in reply_text(reply).lower()))
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
            "answers": [[q, reply_text(r)] for q, r in zip(questions, replies[len(examples):], strict=True)]}


def reply_of(tok: Tokenizer, req) -> str | list[dict]:
    """A finished request's reply as parts (or text), "" for a prompt that was not asked."""
    if req is None:
        return ""
    try:
        return parse_reply(tok, req.tokens)
    except ValueError:  # cut off inside a tool call, or a stray chat token: score the text
        return tok.decode(req.tokens)


def experiment_figures(run_path: Path) -> dict[str, float]:
    """The EXPERIMENTS' figures that RUN/eval/think.json and probe.json hold (think-first vs answer-first,
    probing), under their chat names."""
    out = {}
    for name, keys in EXPERIMENTS.items():
        path = Path(run_path) / "eval" / f"{name}.json"
        if path.exists():
            data = json.loads(path.read_text())
            out |= {ours: data[theirs] for theirs, ours in keys.items() if theirs in data}
    return out


def evaluate_chat(run, stage: str, questions: tuple[str, ...] = ()) -> dict:
    """score_examples on eval.chat_examples held-out examples of each task for the run's `stage` checkpoint, with
    "stage" and the experiments' figures (a task's own figure of the same name wins); writes nothing."""
    checkpoint_stage(run.path, stage)  # a UserError naming the checkpoints present if `stage` is not one
    model, tok = load_model(run.path / stage, pick_device()), load_tokenizer(run.path / "tokenizer")
    examples = eval_examples(run.config, run.config.eval.chat_examples or EXAMPLES)
    result = score_examples(model, tok, examples, tools_for_run(run.path, run.config.tools), run.config.sft.identity,
                            questions)
    result["figures"] = experiment_figures(run.path) | result["figures"]
    return {"stage": stage, **result}
