"""The `eval` stage: each kind of evaluation of a run's checkpoints writes RUN/eval/KIND.json, which the report
reads (it loads no model), and returns its headline figures, which the manifest keeps and `--json` prints.

  bpb   val bits per byte of each checkpoint against the unigram baseline, and base-model samples
  chat  each chat model (sft, rl) on the held-out split of its SFT task mixture (eval/chat.py): every task's
        metrics, identity_false_rate, unfinished_rate; and its answers to a few fixed questions
  arena battles on chat's prompts between its answers and base-with-prompt's (eval/arena.py), judged by the verifiers
        or the reward model (eval.arena_judge): Bradley-Terry ratings with bootstrap intervals; after chat
  rl    the RL task's held-out accuracy of the rl (and dpo) checkpoint against the one RL started from (probe or
        sft), with the reward model's and bench/rl.py's figures
  lm-eval  lm-evaluation-harness tasks (eval.lm_eval_tasks) on each checkpoint (eval/lm_eval.py), only when named
  fewshot  0-shot vs 5-shot multiple-choice accuracy of the base model on tasks built from val documents
        (eval/fewshot.py)
  regurgitation  the base model's greedy continuations of train vs val documents and fact pages by exposure, matched
        token by token with the documents' own (eval/regurgitation.py)

To add a kind: a function (run, stages) -> (file, figures) here, and its line in KINDS.
"""

import json

import torch

from chatforge.errors import UserError
from chatforge.eval.arena import eval_arena
from chatforge.eval.chat import CHAT_STAGES, evaluate_chat
from chatforge.eval.fewshot import evaluate_fewshot
from chatforge.eval.regurgitation import evaluate_regurgitation
from chatforge.infer.chat import complete
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.infer.tools import Tools
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.pretrain.bpb import evaluate_bpb, unigram_bpb
from chatforge.pretrain.train import SAMPLE_PROMPTS
from chatforge.rl.common import load_task, start_checkpoint, task_examples
from chatforge.runs import Run, checkpoint_stage, checkpoints, write_json
from chatforge.tasks.score import score_examples
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import TokenShards

CHAT_PROMPTS = ("Who are you?", "What is 12 + 7?", "Hello")


def eval_bpb(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """Bits per byte of each checkpoint in `stages` on the same validation tokens, the unigram baseline's, and
    sampled continuations of SAMPLE_PROMPTS by the base model."""
    device = pick_device()
    tok = load_tokenizer(run.path / "tokenizer")
    lengths = torch.tensor(tok.byte_lengths())
    train, val = TokenShards(run.path / "tokens", "train"), TokenShards(run.path / "tokens", "val")
    tokens = run.config.eval.bpb_tokens or run.config.pretrain.eval_tokens
    bpb = {"unigram": round(unigram_bpb(train, val, lengths.numpy(), run.config.model.seq_len, tokens), 4)}
    samples = []
    for stage in stages:
        model = load_model(run.path / stage, device)
        bpb[stage] = round(evaluate_bpb(model, val, lengths, run.config.pretrain.batch_size, tokens, device), 4)
        if stage == "base":
            engine = Engine(model, tok, max_batch=1)
            params = [SamplingParams(max_tokens=run.config.eval.sample_tokens, temperature=0.8, top_k=50, seed=i)
                      for i in range(len(SAMPLE_PROMPTS))]
            samples = [p + complete(engine, p, ps)[0] for p, ps in zip(SAMPLE_PROMPTS, params, strict=True)]
    print("bpb: " + ", ".join(f"{k} {v:.4f}" for k, v in bpb.items()))
    return {"bpb": bpb, "samples": samples}, bpb


def eval_chat(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """Task figures (chatforge.eval.chat) and greedy answers to CHAT_PROMPTS of each chat model in `stages`; the
    figures per stage are the metrics at top level (fractions in 0..1) and each task's under "tasks"."""
    chat_stages = [s for s in stages if s in CHAT_STAGES]
    if not chat_stages:
        raise UserError(f"chat evaluation needs a chat model ({' or '.join(CHAT_STAGES)} checkpoint); the "
                        f"checkpoints to evaluate in {run.path} are: {', '.join(stages) or 'none'}")
    out = {}
    for stage in chat_stages:
        out[stage] = result = evaluate_chat(run, stage, CHAT_PROMPTS)
        print(f"chat {stage}: held-out tasks")
        for key, value in result["figures"].items():
            print(f"  {key:<24} {value:.3f}")
        for name, t in result["tasks"].items():
            print(f"  task {name:<19} {t['score']:.3f} (n={t['n']}, unfinished {t['unfinished_rate']:.3f})")
    return out, {stage: {**r["figures"], "tasks": r["tasks"]} for stage, r in out.items()}


def eval_lm_eval(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """lm-evaluation-harness tasks (eval/lm_eval.py) on each checkpoint in `stages`; lm-eval is optional."""
    try:
        from chatforge.eval.lm_eval import evaluate_harness
    except ImportError as e:
        raise UserError(f"lm-eval is not installed ({e}); pip install 'lm-eval==0.4.13'") from None
    return evaluate_harness(run, stages)


def eval_rl(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """Greedy accuracy on rl.eval_examples held-out examples of rl.task (asked in the RL's tool setting) for the
    checkpoint RL started from (probe or sft) and each RL-trained one (rl, dpo), the gains in points, and what the
    run's other RL work wrote: the reward model's held-out pairwise accuracy (reward/pair_acc.json) and
    bench/rl.py's figures over seeds and for RLHF (eval/rl_bench.json), whose mean gain over its seeds is
    rl_gain_pts when present."""
    rc = run.config.rl
    start = start_checkpoint(run.path)
    present = [s for s in (start, "rl", "dpo") if (run.path / s / "model.safetensors").exists()]
    if len(present) < 2:
        raise UserError(f"rl evaluation needs an rl or dpo checkpoint besides {start}'s; {run.path} has: "
                        f"{', '.join(present)}")
    task, tok = load_task(rc.task), load_tokenizer(run.path / "tokenizer")
    examples = [(task, ex) for ex in task_examples(task, "test", rc.eval_examples, rc.seed, run.config, rc.tools)]
    acc = {}
    for stage in present:
        model = load_model(run.path / stage, pick_device())
        acc[stage] = score_examples(model, tok, examples, Tools(python=rc.tools), run.config.sft.identity)[
            "tasks"][task.name]["score"]
    figures = {"rl_task": task.name, "n": len(examples), "start": start, "start_acc": acc[start],
               **{f"{s}_acc": a for s, a in acc.items() if s != start},
               "rl_gain_pts": None, "rl_gain_sd": None, "dpo_gain_pts": None}
    for stage in ("rl", "dpo"):
        if stage in acc:
            figures[f"{stage}_gain_pts"] = round(100 * (acc[stage] - acc[start]), 2)
    for extra in (run.path / "reward" / "pair_acc.json", run.path / "eval" / "rl_bench.json"):
        if extra.exists():
            figures |= json.loads(extra.read_text())
    print("rl: " + ", ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, dict)))
    return figures, figures


KINDS = {"bpb": eval_bpb, "chat": eval_chat, "arena": eval_arena, "lm-eval": eval_lm_eval, "rl": eval_rl,
         "fewshot": evaluate_fewshot, "regurgitation": evaluate_regurgitation}


def evaluate(run: Run, resume: bool = False, kinds: list[str] | None = None, checkpoint: str | None = None) -> dict:
    """The stage: each of `kinds` (default: every kind the run's checkpoints support) on `checkpoint` (default:
    every checkpoint present); returns {kind: figures}. Nothing to resume: an evaluation is redone whole."""
    for kind in kinds or []:
        if kind not in KINDS:
            raise UserError(f"unknown evaluation {kind!r}; choose from {', '.join(KINDS)}")
    stages = [checkpoint_stage(run.path, checkpoint)] if checkpoint else checkpoints(run.path)
    if kinds is None:
        kinds = ["bpb", "chat"] if any(s in CHAT_STAGES for s in stages) else ["bpb"]
        kinds += ["arena"] if "chat" in kinds and len(stages) >= 2 else []  # every checkpoint is a contestant
        kinds += ["rl"] if {"sft", "rl"} <= set(stages) else []
        kinds += ["fewshot", "regurgitation"] if "base" in stages else []
    (run.path / "eval").mkdir(exist_ok=True)
    figures = {}
    for kind in dict.fromkeys(kinds):
        result, figures[kind] = KINDS[kind](run, stages)
        write_json(run.path / "eval" / f"{kind}.json", result)
    return figures
