"""The reward model, where answers cannot be checked: the chat model's trunk with a scalar head, trained on
preference pairs with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected - margin) (InstructGPT; the margin
as in Llama 2). It scores a whole conversation: the mean of a score per token.

Pairs come by type from a verifiable task (so their labels are right by construction) plus any user file in TRL's
format; the held-out pairwise accuracy is reported per type:
    correct  the answer agrees with the python output in its own context vs one that contradicts it (a digit
             changed, off by a little, or an operand echoed, written as the answer is)
    format   reasoning in <think>...</think> then the answer vs the bare answer
    concise  the answer vs the same answer padded with filler
"""

import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model, save_checkpoint
from chatforge.model.gpt import GPT, causal_attention
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.rl.common import load_task, read_pairs, start_checkpoint
from chatforge.runs import write_json
from chatforge.tasks.common import NUMBER, Task, reply_text
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render
from chatforge.train import MetricsLog, batch_indices, progress_bar

FILLER = ["Let me say a bit more about this.", "This is a very interesting question.",
          "I hope that this answer is helpful to you.", "There is a lot that could be said here.",
          "As I mentioned, the answer is as above."]
TYPES = ("correct", "format", "concise")


class RewardModel(nn.Module):
    """A GPT with a linear head on its hidden states: a score per token, and their mean over a sequence as its
    score. Pooled, every answer token gets the gradient itself, and a prefix two answers share adds the same to
    both (held-out correct-vs-wrong on tiny: 0.94 pooled vs 0.72 read at the last token alone)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.cfg.n_embd, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def token_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) scores of token ids x (B, T), each from the state of its causal prefix."""
        g = self.gpt
        T = x.size(1)
        h = g.weights().hidden(x, g.rope_cos[:T], g.rope_sin[:T], lambda layer, q, k, v: causal_attention(q, k, v))
        return self.head(F.rms_norm(h.float(), (h.size(-1),), eps=g.cfg.norm_eps)).squeeze(-1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Scores (B,) of right-padded token ids x (B, T): the mean token score over each sequence's own tokens."""
        mask = torch.arange(x.size(1), device=x.device) < lengths[:, None]
        return (self.token_scores(x) * mask).sum(1) / lengths

    @torch.no_grad()
    def score_ids(self, seqs: list[list[int]], device: str, batch_size: int = 64) -> list[float]:
        """Scores of whole token sequences (conversations, each ending in its <|im_end|>)."""
        out = []
        for i in range(0, len(seqs), batch_size):
            x, lengths = batch(seqs[i : i + batch_size])
            out += self(x.to(device), lengths.to(device)).tolist()
        return out


def batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs])
    x = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = torch.tensor(s)
    return x, lengths


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected - margin).mean()


def number_text(value: float, commas: bool) -> str:
    value = int(value) if value == int(value) else value
    return f"{value:,}" if commas else str(value)


def wrong_number(text: str, answer: float, rng: random.Random, others: list[float] | None = None) -> str | None:
    """`text` with its last number replaced by a wrong one written the same way (1,284 or 1284), or None if it has
    no number: the answer with one digit changed, the answer off by a little, or another number of the context
    (an operand echoed), the mistakes a policy makes."""
    found = list(NUMBER.finditer(text))
    if not found:
        return None
    others = [o for o in others or [] if o != answer]
    kind = rng.choice(["digit", "near", "context"] if others else ["digit", "near"])
    if kind == "context":
        wrong = rng.choice(others)
    elif kind == "near":
        wrong = answer + rng.choice([-10, -2, -1, 1, 2, 10])
    else:
        digits = list(number_text(abs(answer), False))
        i = rng.choice([i for i, d in enumerate(digits) if d.isdigit()])
        digits[i] = rng.choice([d for d in "0123456789" if d != digits[i] and (d != "0" or i > 0 or len(digits) == 1)])
        wrong = math.copysign(float("".join(digits)), answer)
    m = found[-1]
    return text[: m.start()] + number_text(wrong, "," in m.group()) + text[m.end() :]


def as_parts(content: str | list[dict]) -> list[dict]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def edit_answer(parts: list[dict], edit) -> list[dict] | None:
    """`parts` with edit(text) in place of its last text part's text; None if it has none or edit gives None."""
    last = max((i for i, p in enumerate(parts) if p["type"] == "text"), default=None)
    new = None if last is None else edit(parts[last]["text"])
    return None if new is None else parts[:last] + [{"type": "text", "text": new}] + parts[last + 1 :]


def task_pairs(task: Task, split: str, n: int, seed: int, config,
               n_correct: int | None = None) -> list[tuple[str, list[dict], list[dict]]]:
    """Pairs by type (TYPES) from the first examples of the task's `split`: (type, chosen conversation, rejected
    one), correct-vs-wrong from n_correct of them (default n), format and concise from n. Correct-vs-wrong pairs need
    a numeric `answer`; a reference answer without a tool call gets one that prints it."""
    n_correct = n if n_correct is None else n_correct
    rng = random.Random(seed)
    out = []
    for i, ex in enumerate(task.examples(split, max(n, n_correct), seed, config)):
        prompt, ref = ex["messages"][:-1], as_parts(ex["messages"][-1]["content"])
        answer = ex.get("answer")

        def turn(content, prompt=prompt):
            return prompt + [{"role": "assistant", "content": content}]

        if i < n_correct and isinstance(answer, int | float):
            value = str(int(answer)) if answer == int(answer) else str(answer)
            called = ref if any(p["type"] == "output" for p in ref) else \
                [{"type": "python", "text": value}, {"type": "output", "text": value}] + ref
            asked = [float(x.replace(",", "")) for m in prompt if isinstance(m["content"], str)
                     for x in NUMBER.findall(m["content"])]
            if wrong := edit_answer(called, lambda t, a=answer, o=asked: wrong_number(t, a, rng, o)):
                out.append(("correct", turn(called), turn(wrong)))
        if i < n:
            out.append(("format", turn([{"type": "think", "text": reply_text(ref)}] + ref), turn(ref)))
            if rambling := edit_answer(ref, lambda t: " ".join([t, *rng.sample(FILLER, 3)])):
                out.append(("concise", turn(ref), turn(rambling)))
    return out


def load_reward_model(ckpt_dir: Path, device: str) -> RewardModel:
    if not (Path(ckpt_dir) / "head.safetensors").exists():
        raise UserError(f"no reward model in {ckpt_dir}; run `chatforge reward --run {Path(ckpt_dir).parent}` first")
    rm = RewardModel(load_model(ckpt_dir, device))
    rm.head.load_state_dict(load_file(Path(ckpt_dir) / "head.safetensors", device=device))
    return rm.to(device).eval()


def train_reward(run) -> dict:
    """`chatforge reward`: the probe/ (or sft/) checkpoint + pairs -> reward/ (the trunk's checkpoint +
    head.safetensors), metrics/reward.jsonl; returns the held-out pairwise accuracy, overall and per type. Minutes
    at most: a run is redone whole."""
    wc = run.config.reward
    if min(wc.steps, wc.batch_size, wc.test_pairs) < 1 or min(wc.pairs, wc.correct_pairs) < 0 \
            or not 0 < wc.test_fraction < 1:
        raise UserError("reward.steps, batch_size and test_pairs must be >= 1, reward.pairs and correct_pairs >= 0 "
                        "and reward.test_fraction in (0, 1)")
    device = pick_device()
    keep_freed_memory()
    dtype = autocast_dtype(run.config.pretrain.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    # the task's pairs are held out by its own test split (unseen prompts), a file's by a seeded share
    rm = RewardModel(load_model(run.path / start_checkpoint(run.path), device)).to(device)
    task, seq_len = load_task(run.config.rl.task), rm.gpt.cfg.seq_len
    train = encode_pairs(tok, task_pairs(task, "train", wc.pairs, wc.seed, run.config, wc.correct_pairs), seq_len)
    test = encode_pairs(tok, task_pairs(task, "test", wc.test_pairs, wc.seed, run.config), seq_len)
    for path in filter(None, (p.strip() for p in wc.data.split(","))):
        pairs = encode_pairs(tok, [("file", c, r) for c, r in read_pairs(path)], seq_len)
        random.Random(wc.seed).shuffle(pairs)
        n_test = math.ceil(wc.test_fraction * len(pairs))
        test, train = test + pairs[:n_test], train + pairs[n_test:]
    if not train or not test:
        raise UserError(f"{len(train)} train and {len(test)} held-out preference pairs fit the context of {seq_len} "
                        f"tokens: too few")
    optimizer = make_optimizer(rm.gpt, wc.lr, 0.0)
    optimizer.add_param_group({"params": list(rm.head.parameters()), "lr": wc.lr, "base_lr": wc.lr})
    log = MetricsLog(run.path / "metrics" / "reward.jsonl")
    print(f"reward: {len(train)} train / {len(test)} held-out pairs, {wc.steps} steps of {wc.batch_size}")
    t0 = time.time()
    bar = progress_bar("reward", wc.steps, 0)
    for step in range(1, wc.steps + 1):
        idx = batch_indices(len(train), (step - 1) * wc.batch_size, wc.batch_size, wc.seed)
        seqs = [train[i][1] for i in idx] + [train[i][2] for i in idx]
        x, lengths = batch(seqs)
        with autocast(device, dtype):
            scores = rm(x.to(device), lengths.to(device))
        loss = bradley_terry_loss(scores[: len(idx)], scores[len(idx) :], wc.margin)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        log.write(step, loss=round(loss.item(), 4))
        bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.update(1)
    bar.close()
    rm.eval()
    acc = pair_accuracy(rm, test, device)
    log.write(wc.steps, **{f"acc_{k}": v for k, v in acc.items()})
    out = run.path / "reward"
    save_checkpoint(out, rm.gpt)
    save_file({k: v.detach().cpu().contiguous() for k, v in rm.head.state_dict().items()}, out / "head.safetensors")
    print("reward: held-out pairwise accuracy " + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))
    figures = {"rm_pair_acc": acc.pop("all"), "rm_pair_acc_by_type": acc, "rm_pairs": [len(train), len(test)],
               "rm_train_seconds": round(time.time() - t0, 1)}
    write_json(out / "pair_acc.json", figures)  # for `chatforge eval rl`
    return figures


def encode_pairs(tok: Tokenizer, pairs: list[tuple], max_len: int) -> list[tuple[str, list[int], list[int]]]:
    """(type, chosen ids, rejected ids); pairs longer than the context are dropped."""
    out = []
    for kind, chosen, rejected in pairs:
        c, r = render(tok, chosen)[0], render(tok, rejected)[0]
        if max(len(c), len(r)) <= max_len:
            out.append((kind, c, r))
    return out


def pair_accuracy(rm: RewardModel, pairs: list[tuple[str, list[int], list[int]]], device: str) -> dict[str, float]:
    """Share of pairs whose chosen side scores higher: overall ("all") and per type."""
    chosen = rm.score_ids([c for _, c, _ in pairs], device)
    rejected = rm.score_ids([r for _, _, r in pairs], device)
    hits: dict[str, list[bool]] = {}
    for (kind, _, _), c, r in zip(pairs, chosen, rejected, strict=True):
        hits.setdefault(kind, []).append(c > r)
        hits.setdefault("all", []).append(c > r)
    return {k: round(sum(v) / len(v), 4) for k, v in hits.items()}
