"""The arena: a run's checkpoints answer the same held-out chat-task prompts and meet in pairwise battles, ranked by
Bradley-Terry ratings with bootstrap intervals, as LMArena ranks models (Chiang et al., 2024).

Contestants: each chat checkpoint (sft, probe, rl), whose greedy answers `eval chat` already made and kept in
eval/chat.json with their scores, and "base": the base model made an assistant by a prompt, a plain-text few-shot
conversation whose reply is cut at the next turn (the lecture's trick), with the tools off.
Judges: the tasks' verifiers (the higher score wins, equal scores tie), or with eval.arena_judge="reward" the run's
reward model (reward/). A contestant with no answer (its prompt filled the context) loses to any answer.
Ratings: the maximum-likelihood Bradley-Terry strengths, a tie half a win to each side, on the Elo scale (400/ln 10
points per unit of log-odds, the contestants' mean at 1000), with 95% percentile intervals from resampling the prompts.
"""

import itertools
import json
import math

import numpy as np

from chatforge.errors import UserError
from chatforge.eval.chat import CHAT_STAGES, held_out, prompts_digest
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.rl.reward import load_reward_model
from chatforge.runs import Run
from chatforge.tasks.common import Task, reply_text
from chatforge.tasks.score import MAX_BATCH, MAX_TOKENS
from chatforge.tokenizer.bpe import Tokenizer, load_tokenizer
from chatforge.tokenizer.chat import render

JUDGES = ("verifier", "reward")
ELO = 400 / math.log(10)  # rating points per unit of log-odds
PRIOR_TIES = 1.0  # one virtual drawn battle per pair: an undefeated contestant gets a finite rating
BOOTSTRAP = 200  # resamples of the prompts for the intervals
SAMPLES = 4  # battles kept for the report: of different tasks, not all ties
FEW_SHOT = [("Hello! Who are you?", "Hi! I'm {identity}, an AI assistant. How can I help you today?"),
            ("What is the capital of France?", "The capital of France is Paris."),
            ("Can you help me pick a name for my cat?", "Sure! How about Luna, Milo or Pepper?")]


def base_prompt(messages: list[dict], identity: str) -> str:
    """A conversation as plain text after the few-shot exchanges, ending where the assistant's reply begins."""
    turns = [f"User: {q}\nAssistant: {a.format(identity=identity)}" for q, a in FEW_SHOT]
    for m in messages:
        text = reply_text(m["content"]) if m["role"] == "assistant" else str(m["content"])
        turns.append(f"{m['role'].capitalize()}: {text}")
    return "The following is a conversation between a user and a helpful AI assistant.\n\n" + "\n\n".join(
        turns) + "\n\nAssistant:"


def base_replies(run: Run, tok: Tokenizer, examples: list[tuple[Task, dict]]) -> list[str | None]:
    """The base model's greedy replies to `examples` through base_prompt, cut at the next turn; None where the
    prompt fills the context."""
    model = load_model(run.path / "base", pick_device())
    # a turn is one line in this format, so the reply ends at its first newline (on tiny, 12 s instead of 38 s for
    # the same scores: the base model goes on rambling in verse)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, stop=("\n",), stop_ids=(tok.bos_id,))
    prompts = [[tok.bos_id, *tok.encode(base_prompt(ex["messages"][:-1], run.config.sft.identity))]
               for _, ex in examples]
    todo = [i for i, ids in enumerate(prompts) if len(ids) < model.cfg.seq_len]
    replies: list[str | None] = [None] * len(prompts)
    for i, req in zip(todo, Engine(model, tok, max_batch=MAX_BATCH).generate([prompts[i] for i in todo], params),
                      strict=True):
        replies[i] = req.text.strip()
    return replies


def reward_values(run: Run, tok: Tokenizer, examples: list[tuple[Task, dict]], replies: dict[str, list]
                  ) -> dict[str, list[float | None]]:
    """The reward model's score of each example's conversation ending in each contestant's reply; None for no reply
    or one that does not fit the context."""
    device = pick_device()
    rm = load_reward_model(run.path / "reward", device)
    out = {}
    for name, answers in replies.items():
        seqs = [None if r is None else render(tok, [*ex["messages"][:-1], {"role": "assistant", "content": r}])[0]
                for (_, ex), r in zip(examples, answers, strict=True)]
        todo = [i for i, ids in enumerate(seqs) if ids is not None and len(ids) <= rm.gpt.cfg.seq_len]
        out[name] = [None] * len(seqs)
        for i, score in zip(todo, rm.score_ids([seqs[i] for i in todo], device), strict=True):
            out[name][i] = round(score, 4)
    return out


def outcomes(values: np.ndarray) -> np.ndarray:
    """Per-prompt battle results from the judge's values (P prompts, K contestants; nan: no answer): (P, K, K) with
    [p, i, j] = 1 if i beat j on prompt p, 0.5 for a tie, 0 for a loss (and on the diagonal)."""
    v = np.where(np.isnan(values), -np.inf, values)
    a, b = v[:, :, None], v[:, None, :]
    out = (a > b) + 0.5 * (a == b)
    out[:, np.arange(v.shape[1]), np.arange(v.shape[1])] = 0.0
    return out


def bradley_terry(wins: np.ndarray, prior: float = PRIOR_TIES, tol: float = 1e-10, max_iter: int = 100_000
                  ) -> np.ndarray:
    """Maximum-likelihood Bradley-Terry log-strengths (mean 0) from win counts wins[..., i, j] (i over j, a tie half
    to each), for one (K, K) matrix or a stack of them, by Zermelo's iteration (Hunter, 2004), `prior` virtual
    ties added to every pair. P(i beats j) = 1 / (1 + exp(theta_j - theta_i))."""
    k = wins.shape[-1]
    w = wins + prior / 2 * (1 - np.eye(k))
    n = w + np.swapaxes(w, -1, -2)
    total = w.sum(-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(max_iter):
        new = total / (n / (p[..., :, None] + p[..., None, :])).sum(-1)
        new /= np.exp(np.log(new).mean(-1, keepdims=True))
        done = np.abs(np.log(new) - np.log(p)).max() < tol
        p = new
        if done:
            break
    theta = np.log(p)
    return theta - theta.mean(-1, keepdims=True)


def ratings(results: np.ndarray, names: list[str], rounds: int = BOOTSTRAP, seed: int = 0) -> dict[str, dict]:
    """Elo-scale ratings (the mean at 1000) from per-prompt results (P, K, K), each with its 95% interval over
    `rounds` resamples of the prompts: {name: {"rating", "lo", "hi"}}."""
    point = 1000 + ELO * bradley_terry(results.sum(0))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(results), (rounds, len(results)))
    boot = 1000 + ELO * bradley_terry(results[picks].sum(1))
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return {name: {"rating": round(float(point[i]), 1), "lo": round(float(lo[i]), 1), "hi": round(float(hi[i]), 1)}
            for i, name in enumerate(names)}


def chat_answers(run: Run, stages: list[str], examples: list[tuple[Task, dict]]) -> dict[str, dict]:
    """eval/chat.json's per-example scores and replies of each chat checkpoint in `stages`, checked to be for
    `examples`."""
    path = run.path / "eval" / "chat.json"
    if not path.exists():
        raise UserError(f"the arena needs eval chat's answers ({path} is missing); run `chatforge eval chat --run "
                        f"{run.path}` first")
    chat, digest = json.loads(path.read_text()), prompts_digest(examples)
    for stage in stages:
        if stage not in chat or chat[stage].get("prompts_digest") != digest or "scores" not in chat[stage]:
            raise UserError(f"{path} has no answers of {stage} to this run's held-out examples (made before the "
                            f"checkpoint or the config changed?); run `chatforge eval chat --run {run.path}` again")
    return {stage: chat[stage] for stage in stages}


def eval_arena(run: Run, stages: list[str]) -> tuple[dict, dict]:
    """Battles between base-with-prompt (when `stages` has base) and each chat checkpoint in `stages` on every held-out
    prompt, judged by eval.arena_judge; the ratings, each pair's [wins, ties, losses] and the rank."""
    judge = run.config.eval.arena_judge
    if judge not in JUDGES:
        raise UserError(f"eval.arena_judge must be one of {', '.join(JUDGES)}, got {judge!r}")
    if judge == "reward" and not (run.path / "reward").exists():
        raise UserError(f"eval.arena_judge=reward needs the run's reward model; run `chatforge reward --run "
                        f"{run.path}` first")
    names = [s for s in stages if s == "base" or s in CHAT_STAGES]
    if len(names) < 2:
        raise UserError(f"the arena needs two contestants (base and the chat checkpoints); the checkpoints to "
                        f"evaluate in {run.path} are: {', '.join(stages) or 'none'}")
    tok, examples = load_tokenizer(run.path / "tokenizer"), held_out(run)
    if not examples:
        raise UserError("the arena battles on the held-out examples of the SFT mixture's tasks; it names none")
    chat = chat_answers(run, [s for s in names if s != "base"], examples)
    replies = {s: [r if v is not None else None for r, v in zip(chat[s]["replies"], chat[s]["scores"], strict=True)]
               for s in chat}
    scores = {s: chat[s]["scores"] for s in chat}
    if "base" in names:
        replies["base"] = base_replies(run, tok, examples)
        scores["base"] = [None if r is None else task.score(ex, r)
                          for (task, ex), r in zip(examples, replies["base"], strict=True)]
    values = reward_values(run, tok, examples, replies) if judge == "reward" else scores
    table = np.array([[np.nan if values[s][i] is None else values[s][i] for s in names] for i in range(len(examples))])
    results = outcomes(table)
    rated = ratings(results, names)
    wins = {}
    for i, j in itertools.combinations(range(len(names)), 2):  # the later (more trained) checkpoint's view
        r = results[:, j, i]
        wins[f"{names[j]} vs {names[i]}"] = [int((r == 1).sum()), int((r == 0.5).sum()), int((r == 0).sum())]
    rank = sorted(names, key=lambda s: -rated[s]["rating"])
    figures = {"judge": judge, "battles": len(examples) * len(wins), "prompts": len(examples), "ratings": rated,
               "wins": wins, "rank": rank}
    print(f"arena ({judge}, {figures['battles']} battles): " + ", ".join(
        f"{s} {rated[s]['rating']:.0f} [{rated[s]['lo']:.0f}, {rated[s]['hi']:.0f}]" for s in rank))
    contested = {}  # the first battle of each task that was not all ties
    for i, (task, _) in enumerate(examples):
        if (results[i] == 1).any():
            contested.setdefault(task.name, i)
    samples = [{"task": examples[i][0].name, "prompt": examples[i][1]["messages"][-2]["content"],
                "answers": {s: {"reply": reply_text(replies[s][i] or ""), "value": values[s][i]} for s in names}}
               for i in list(contested.values())[:SAMPLES]]
    return {**figures, "samples": samples}, figures
