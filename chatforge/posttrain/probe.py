"""The `probe` stage: teach the chat model to say "I don't know" where it does not know (Llama 3's factuality
recipe; the lecture's "interrogate the model").

Questions with known answers about the people of the fact corpus (data/facts.py, every exposure, the facts task's
training split) are each sampled `probe.samples` times from the sft model. A question most samples answer right
is known: its reference answer is kept. One that no sample answers right is unknown: it becomes an "I don't know"
example. Those conversations join the sft mixture and the model is fine-tuned again from sft/ into probe/ (the sft
stage's training, posttrain/sft.py). eval/probe.json reports accuracy on the held-out people the model should
know and the refusal rate on invented entities, before and after.
"""

import dataclasses
import random

from chatforge.errors import UserError
from chatforge.infer.chat import chat_params
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.posttrain.conversations import write_jsonl
from chatforge.posttrain.sft import sft
from chatforge.runs import Run, write_json
from chatforge.tasks.facts import ATTRIBUTES, Facts, dont_know, is_right, question, split_people
from chatforge.tasks.score import score_examples
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.chat import render_prompt

MAX_TOKENS = 32  # a reference answer is one short sentence
MAX_BATCH = 32
SAMPLES = 6  # question/answer pairs kept in eval/probe.json


def probe_questions(run: Run) -> list[dict]:
    """`probe.questions` facts questions about the training split's people, each person and attribute once."""
    rng = random.Random(f"probe/{run.config.sft.seed}")
    pairs = [(p, a) for p in split_people(run.config, "train") for a in ATTRIBUTES]
    pairs = rng.sample(pairs, min(run.config.probe.questions, len(pairs)))
    return [question(p, a, "train", rng) for p, a in pairs]


def sample_answers(model, tok, questions: list[dict], k: int, temperature: float, seed: int) -> list[list[str]]:
    """k sampled replies (text) to each question, in one batched engine."""
    engine = Engine(model, tok, max_batch=MAX_BATCH)
    params = chat_params(tok, SamplingParams(max_tokens=MAX_TOKENS, temperature=temperature))
    reqs = [[engine.submit(render_prompt(tok, q["messages"][:-1]), dataclasses.replace(params, seed=seed + i * k + j))
             for j in range(k)] for i, q in enumerate(questions)]
    while engine.has_work():
        engine.step()
    return [[r.text for r in row] for row in reqs]


def probe_conversations(questions: list[dict], answers: list[list[str]], seed: int) -> tuple[list[dict], dict]:
    """Known questions keep their reference answer, unknown ones get "I don't know"; the rest are left out."""
    rng = random.Random(f"probe/answers/{seed}")
    rows, counts = [], {"known": 0, "unknown": 0, "unsure": 0}
    for q, replies in zip(questions, answers, strict=True):
        right = sum(is_right(q, r) for r in replies)
        if 2 * right > len(replies):
            counts["known"] += 1
            rows.append({"messages": q["messages"]})
        elif right == 0:
            counts["unknown"] += 1
            rows.append({"messages": [q["messages"][0], {"role": "assistant", "content": dont_know(q["name"], rng)}]})
        else:
            counts["unsure"] += 1
    return rows, counts


def facts_figures(run: Run, stage: str, examples: list) -> dict:
    """known_acc and refusal_invented of the `stage` checkpoint on the held-out facts examples, with samples."""
    model, tok = load_model(run.path / stage, pick_device()), load_tokenizer(run.path / "tokenizer")
    result = score_examples(model, tok, examples, None, run.config.sft.identity)
    return {"known_acc": result["figures"].get("known_acc", 0.0),
            "refusal_invented": result["figures"].get("refusal_invented", 0.0), "samples": result["samples"]}


def probe(run: Run, resume: bool = False) -> dict:
    """The stage: sft/ → probe_data/probe.jsonl (the probing), probe/ (fine-tuned), eval/probe.json."""
    pc = run.config.probe
    if run.config.data.facts < 1:
        raise UserError("probing needs the fact corpus in pretraining: a run whose data stage had data.facts > 0")
    if pc.samples < 1 or pc.questions < 1:
        raise UserError(f"probe.samples and probe.questions must be >= 1, got {pc.samples} and {pc.questions}")
    task = Facts()
    examples = [(task, ex) for ex in task.examples("test", pc.eval_examples, run.config.sft.seed, run.config)]
    before = facts_figures(run, "sft", examples)
    path = run.path / "probe_data" / "probe.jsonl"
    questions = probe_questions(run)
    model, tok = load_model(run.path / "sft", pick_device()), load_tokenizer(run.path / "tokenizer")
    answers = sample_answers(model, tok, questions, pc.samples, pc.temperature, run.config.sft.seed)
    rows, counts = probe_conversations(questions, answers, run.config.sft.seed)
    print(f"probe: {len(questions)} questions x {pc.samples} samples: {counts['known']} known, {counts['unknown']} "
          f"unknown, {counts['unsure']} unsure")
    if not rows:
        raise UserError("probing found no known and no unknown question: nothing to fine-tune on")
    write_jsonl(path, rows)
    sc = run.config.sft
    tune = dataclasses.replace(sc, mixture=f"{sc.mixture},{path}:{pc.weight}", steps=pc.steps, lr=pc.lr,
                               eval_examples=0)
    trained = sft(Run(run.path, dataclasses.replace(run.config, sft=tune), run.manifest), resume, "sft", "probe")
    after = facts_figures(run, "probe", examples)
    figures = {"n": len(questions), **counts,
               "known_acc_before": before["known_acc"], "known_acc_after": after["known_acc"],
               "refusal_invented_before": before["refusal_invented"],
               "refusal_invented_after": after["refusal_invented"],
               "known_acc_drop": round(before["known_acc"] - after["known_acc"], 4)}
    (run.path / "eval").mkdir(exist_ok=True)
    write_json(run.path / "eval" / "probe.json", {**figures, "samples": {"before": before["samples"][:SAMPLES],
                                                                         "after": after["samples"][:SAMPLES]}})
    print("probe: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return {**figures, "steps": trained["steps"], "train_seconds": trained["train_seconds"]}
