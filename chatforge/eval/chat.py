"""Chat evaluation: a checkpoint's greedy answers to the held-out split of each task in the run's SFT
mixture, scored by the tasks' own checkers (chatforge/tasks/), and to a few fixed questions for the report.
Files in the mixture have no checker and are not evaluated."""

from chatforge.infer.chat import chat_params
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.runs import checkpoint_stage
from chatforge.tasks import TASKS, parse_mixture
from chatforge.tasks.common import reply_text
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.chat import parse_reply, render_prompt

EXAMPLES = 32  # held-out examples per task: a score to 1/32, and seconds on the micro preset
SAMPLES = 3  # per task, kept with their scores for the report
MAX_TOKENS = 64  # the tasks' reference answers are one sentence
MAX_BATCH = 16


def evaluate_chat(run, stage: str, questions: tuple[str, ...] = ()) -> dict:
    """{"stage", "tasks": {name: {"score": mean in 0..1, "n"}}, "samples": [{"task", "prompt", "reply", "score"}],
    "answers": [[question, reply], ...]} for the run's `stage` checkpoint, all in one batch; writes nothing."""
    checkpoint_stage(run.path, stage)  # a UserError naming the checkpoints present if `stage` is not one
    model, tok = load_model(run.path / stage, pick_device()), load_tokenizer(run.path / "tokenizer")
    tasks = [TASKS[s.name] for s in parse_mixture(run.config.sft.mixture) if not s.is_file]
    examples = [(task, ex) for task in tasks
                for ex in task.examples("test", EXAMPLES, run.config.sft.seed, run.config)]
    params = chat_params(tok, SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0))
    prompts = [ex["messages"][:-1] for _, ex in examples] + [[{"role": "user", "content": q}] for q in questions]
    requests = Engine(model, tok, max_batch=MAX_BATCH).generate([render_prompt(tok, m) for m in prompts], params)
    scores: dict[str, list[float]] = {task.name: [] for task in tasks}
    samples = []
    replies = []
    for req in requests:
        try:
            replies.append(parse_reply(tok, req.tokens))
        except ValueError:  # cut off inside a tool call, or a stray chat token: score the text
            replies.append(tok.decode(req.tokens))
    for (task, ex), reply in zip(examples, replies, strict=False):
        score = task.score(ex, reply)
        if len(scores[task.name]) < SAMPLES:
            samples.append({"task": task.name, "prompt": ex["messages"][-2]["content"], "reply": reply_text(reply),
                            "score": score})
        scores[task.name].append(score)
    return {"stage": stage, "tasks": {name: {"score": round(sum(s) / len(s), 4), "n": len(s)}
                                      for name, s in scores.items()},
            "samples": samples,
            "answers": [[q, reply_text(r)] for q, r in zip(questions, replies[len(examples):], strict=True)]}
