"""Distillation: a larger chatforge model (the teacher, another run) answers rl.task's training prompts; the
answers its verifier accepts (rejection sampling) become a conversation file, and this run's SFT stage is redone
with that file added to its mixture, so the smaller model learns from the teacher's traces. The teacher's answers
travel as text: its tokenizer need not be this run's."""

import dataclasses
import time
from pathlib import Path

from chatforge.errors import UserError
from chatforge.infer.chat import chat_params, load_chat_model
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.precision import pick_device
from chatforge.posttrain.conversations import write_jsonl
from chatforge.rl.common import load_task
from chatforge.rl.grpo import verify
from chatforge.runs import run_stage
from chatforge.tasks.score import reply_of
from chatforge.tokenizer.chat import render_prompt

MAX_BATCH = 64


def teacher_traces(run) -> tuple[list[dict], dict]:
    """The teacher's accepted answers as conversations, and counts of what was sampled and kept."""
    dc = run.config.distill
    if not dc.teacher:
        raise UserError("distillation needs a teacher run: --distill.teacher=runs/NAME")
    model, tok, stage = load_chat_model(Path(dc.teacher), None, pick_device())
    task = load_task(run.config.rl.task)
    examples = task.examples("train", dc.examples, run.config.sft.seed, run.config)
    engine = Engine(model, tok, max_batch=MAX_BATCH)
    params = chat_params(tok, SamplingParams(max_tokens=run.config.rl.max_tokens, temperature=dc.temperature))
    prompts = [render_prompt(tok, ex["messages"][:-1]) for ex in examples]
    reqs = engine.generate([p for p in prompts for _ in range(dc.samples)], params)
    rows, correct = [], 0
    for k, req in enumerate(reqs):
        ex, reply = examples[k // dc.samples], reply_of(tok, req)
        ok = verify(task, ex, reply) == 1
        correct += ok
        if ok or not dc.only_correct:
            rows.append({"messages": ex["messages"][:-1] + [{"role": "assistant", "content": reply}]})
    return rows, {"teacher_stage": stage, "sampled": len(reqs), "teacher_acc": round(correct / len(reqs), 4),
                  "kept": len(rows)}


def distill(run) -> dict:
    """`chatforge distill`: the teacher's traces -> distill_data/train.jsonl, then this run's sft stage again with
    the file in its mixture (sft/ becomes the distilled model)."""
    t0 = time.time()
    rows, stats = teacher_traces(run)
    if not rows:
        raise UserError(f"the teacher answered none of {stats['sampled']} prompts correctly; nothing to distill")
    path = run.path / "distill_data" / "train.jsonl"
    write_jsonl(path, rows)
    print(f"distill: {stats['kept']} of {stats['sampled']} teacher answers kept (accuracy {stats['teacher_acc']})")
    run.config.sft = dataclasses.replace(run.config.sft, mixture=f"{run.config.sft.mixture},{path}:1")
    sft = run_stage(run, "sft", force=True)
    return {**stats, "sft_val_loss": sft.get("val_loss"), "seconds": round(time.time() - t0, 1)}
