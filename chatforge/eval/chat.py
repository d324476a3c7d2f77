"""Chat evaluation: a checkpoint's greedy answers to the held-out split of each task in the run's SFT mixture,
scored by the tasks' own checkers (answered and scored by tasks/score.py), and to a few fixed questions for the
report. Files in the mixture have no checker and are not evaluated.

Answers are generated as `chatforge chat` makes them: the python tool on, search over the run's index/ when it
has one; an example marked "tools": False is answered by an engine without tools. The figures are each task's
`Task.metrics` averaged per key, plus
  identity_false_rate  the assistant's name in replies to the other tasks' prompts (it should say it when asked)
  unfinished_rate      replies that hit the token limit instead of ending with <|im_end|>
and the top-level figures of eval/think.json and eval/probe.json when those experiments wrote them.
eval/chat.json keeps each example's score and reply, which the arena (eval/arena.py) judges.
"""

import hashlib
import json
from pathlib import Path

from chatforge.infer.tools import tools_for_run
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.runs import checkpoint_stage
from chatforge.tasks.common import Task
from chatforge.tasks.score import eval_examples, score_examples
from chatforge.tokenizer.bpe import load_tokenizer

EXAMPLES = 100  # held-out examples per task (eval.chat_examples=0): a score to 1/100
CHAT_STAGES = ("sft", "probe", "rl")  # the checkpoints trained to answer in the chat format
# eval/NAME.json files that experiments write (posttrain/think.py, probe.py): their figure -> the chat figure
EXPERIMENTS = {"think": {"think_first_acc": "think_first_acc", "answer_first_acc": "answer_first_acc"},
               "probe": {"refusal_invented_after": "refusal_invented", "known_acc_drop": "known_acc_drop"}}


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


def held_out(run) -> list[tuple[Task, dict]]:
    """The examples `eval chat` asks, and the arena's prompts: eval.chat_examples held-out examples of each task."""
    return eval_examples(run.config, run.config.eval.chat_examples or EXAMPLES)


def prompts_digest(examples: list[tuple[Task, dict]]) -> str:
    """A hash of the examples' prompts, kept with their per-example scores so a reader can tell they are its own."""
    return hashlib.sha256(json.dumps([ex["messages"][:-1] for _, ex in examples]).encode()).hexdigest()[:16]


def evaluate_chat(run, stage: str, questions: tuple[str, ...] = ()) -> dict:
    """score_examples on the held_out examples for the run's `stage` checkpoint, with "stage", the examples'
    "prompts_digest" and the experiments' figures (a task's own figure of the same name wins); writes nothing."""
    checkpoint_stage(run.path, stage)  # a UserError naming the checkpoints present if `stage` is not one
    model, tok = load_model(run.path / stage, pick_device()), load_tokenizer(run.path / "tokenizer")
    examples = held_out(run)
    result = score_examples(model, tok, examples, tools_for_run(run.path, run.config.tools), run.config.sft.identity,
                            questions)
    result["figures"] = experiment_figures(run.path) | result["figures"]
    return {"stage": stage, "prompts_digest": prompts_digest(examples), **result}
