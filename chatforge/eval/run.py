"""The `eval` stage: each kind of evaluation of a run's checkpoints writes RUN/eval/KIND.json, which the report
reads (it loads no model), and returns its headline figures, which the manifest keeps and `--json` prints.

  bpb   val bits per byte of each checkpoint against the unigram baseline, and base-model samples
  chat  each chat model (sft, rl) on the held-out split of its SFT task mixture (eval/chat.py), and its answers
        to a few fixed questions

To add a kind: a function (run, stages) -> (file, figures) here, and its line in KINDS.
"""

import torch

from chatforge.errors import UserError
from chatforge.eval.chat import evaluate_chat
from chatforge.infer.chat import complete
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.pretrain.bpb import evaluate_bpb, unigram_bpb
from chatforge.pretrain.train import SAMPLE_PROMPTS
from chatforge.runs import Run, checkpoint_stage, checkpoints, write_json
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.shards import TokenShards

CHAT_PROMPTS = ("Who are you?", "What is 12 + 7?", "Hello")
CHAT_STAGES = ("sft", "rl")  # the checkpoints trained to answer in the chat format
NOT_BUILT = {"rl": "RL evaluation (rewards and pass rates of the RL model) is not built yet",
             "lm-eval": "the lm-eval harness adapter is not built yet"}


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
    """Task scores (chatforge.eval.chat) and greedy answers to CHAT_PROMPTS of each chat model in `stages`."""
    chat_stages = [s for s in stages if s in CHAT_STAGES]
    if not chat_stages:
        raise UserError(f"chat evaluation needs a chat model ({' or '.join(CHAT_STAGES)} checkpoint); the "
                        f"checkpoints to evaluate in {run.path} are: {', '.join(stages) or 'none'}")
    out = {}
    for stage in chat_stages:
        out[stage] = result = evaluate_chat(run, stage, CHAT_PROMPTS)
        print(f"chat {stage}: " + ", ".join(f"{name} {t['score']:.3f} (n={t['n']})"
                                            for name, t in result["tasks"].items()))
    return out, {stage: {name: t["score"] for name, t in r["tasks"].items()} for stage, r in out.items()}


KINDS = {"bpb": eval_bpb, "chat": eval_chat}


def evaluate(run: Run, resume: bool = False, kinds: list[str] | None = None, checkpoint: str | None = None) -> dict:
    """The stage: each of `kinds` (default: every kind the run's checkpoints support) on `checkpoint` (default:
    every checkpoint present); returns {kind: figures}. Nothing to resume: an evaluation is redone whole."""
    for kind in kinds or []:
        if kind in NOT_BUILT:
            raise UserError(NOT_BUILT[kind])
        if kind not in KINDS:
            raise UserError(f"unknown evaluation {kind!r}; choose from {', '.join([*KINDS, *NOT_BUILT])}")
    stages = [checkpoint_stage(run.path, checkpoint)] if checkpoint else checkpoints(run.path)
    if kinds is None:
        kinds = ["bpb", "chat"] if any(s in CHAT_STAGES for s in stages) else ["bpb"]
    (run.path / "eval").mkdir(exist_ok=True)
    figures = {}
    for kind in dict.fromkeys(kinds):
        result, figures[kind] = KINDS[kind](run, stages)
        write_json(run.path / "eval" / f"{kind}.json", result)
    return figures
