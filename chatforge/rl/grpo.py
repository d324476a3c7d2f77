"""GRPO (DeepSeekMath, Shao et al., 2024; DeepSeek-R1): the chat model practises on a task's problems. Each step
samples G answers to each of a few prompts through the batched engine, rewards each (the task's verifier, or the
reward model for RLHF, plus a format reward), and pushes up the tokens of answers that beat their group's mean.
Prompts of other tasks (rl.mix) may join the practice, each rewarded by its own verifier, as R1's second RL stage
covers every kind of prompt: on tiny, RL on the calculator alone took the other chat tasks' mean from 0.27 to 0.21.

    advantage  A_i = (r_i - mean(r)) / std(r) over the G answers to one prompt (Dr. GRPO: no std)
    loss       -min(ratio A, clip(ratio, 1 - eps, 1 + eps) A) + beta k3(pi, pi_ref), ratio = pi / pi_old
               averaged over every trained token of the step (token-level, DAPO), over `epochs` optimizer steps,
               plus rl.ptx x the NLL per token of a few of the start checkpoint's SFT conversations (PPO-ptx)

The old log-probabilities are the rollout policy's: the training model's in its first inner step (the engine samples
from the same weights, refreshed after each step). Tool outputs the engine pastes into an answer are masked out of
the loss: the model did not choose them.
"""

import dataclasses
import time
from dataclasses import dataclass

import torch

from chatforge.errors import UserError
from chatforge.infer.chat import chat_params
from chatforge.infer.engine import Engine, SamplingParams
from chatforge.infer.tools import Tools
from chatforge.model.checkpoint import load_model, remove_checkpoint
from chatforge.model.optim import make_optimizer
from chatforge.model.precision import autocast, autocast_dtype, keep_freed_memory, pick_device
from chatforge.posttrain.loaders import load_conversations
from chatforge.posttrain.sft import collate, packed_loss, render_and_pack
from chatforge.rl.common import answer_logprobs, answer_mask, load_task, start_checkpoint, task_examples
from chatforge.rl.reward import load_reward_model
from chatforge.tasks import TASKS, parse_mixture
from chatforge.tasks.common import Task
from chatforge.tasks.score import names_itself, reply_of
from chatforge.tokenizer.bpe import load_tokenizer
from chatforge.tokenizer.chat import render_prompt
from chatforge.train import (
    MetricsLog,
    TrainState,
    batch_indices,
    check_finite,
    load_state,
    lr_multiplier,
    progress,
    progress_bar,
    restore_rng,
    save_state,
    set_lr,
)

MAX_BATCH = 64  # engine rows: a step's P x G answers decode together up to this many


@dataclass
class Rollout:
    task: str
    prompt: list[int]
    tokens: list[int]  # the answer, with the <|im_end|> that ended it
    mask: list[int]  # 1: sampled by the model (trained); 0: a tool output the runtime pasted in
    accuracy: float  # the verifier's score; 0 when it failed or the answer did not end
    formatted: float  # 1: <think>...</think> then an answer
    failed: bool  # the verifier raised or returned None
    tool_calls: int
    ended: bool  # stopped at <|im_end|> within max_tokens
    reward: float = 0.0


def group_advantages(rewards: torch.Tensor, scale: bool) -> torch.Tensor:
    """(P, G) rewards -> advantages: centred on each group's mean, and divided by its std (Bessel-corrected, as TRL)
    when `scale`. A group whose answers all score the same teaches nothing: its advantages are 0."""
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / (rewards.std(1, keepdim=True) + 1e-4) if scale else centred


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, clip: float,
              kl_coef: float = 0.0, ref_logp: torch.Tensor | None = None,
              n_tokens: float | None = None) -> tuple[torch.Tensor, dict]:
    """The clipped surrogate plus kl_coef x k3 KL (Schulman's estimator exp(d) - d - 1, d = log pi_ref - log pi:
    unbiased, always >= 0), per token (B, T), summed over the tokens where mask is 1 and divided by n_tokens (default:
    their count). `adv` is per sequence (B,). Also returns the KL and the clip fraction (tokens whose ratio the clip
    held) per trained token."""
    adv = adv[:, None]
    ratio = torch.exp(logp - old_logp)
    per_token = -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        per_token = per_token + kl_coef * kl
    n = mask.sum().clamp(min=1) if n_tokens is None else max(n_tokens, 1)
    clipped = ((ratio < 1 - clip) & (adv < 0)) | ((ratio > 1 + clip) & (adv > 0))
    stats = {"kl": ((kl * mask).sum() / n).item(), "clip_frac": ((clipped * mask).sum() / n).item()}
    return (per_token * mask).sum() / n, stats


def format_reward(reply: str | list[dict]) -> float:
    """1 for reasoning in <think>...</think> first and an answer in text last (tool calls may come between)."""
    return float(isinstance(reply, list) and len(reply) > 1 and reply[0]["type"] == "think"
                 and reply[-1]["type"] == "text" and bool(reply[-1]["text"].strip()))


def verify(task: Task, example: dict, reply: str | list[dict]) -> float | None:
    """The task's score, or None when its verifier fails: a user's checker is outside our control, and one bad
    answer must not end a run (it counts as reward 0 and is logged)."""
    try:
        score = task.score(example, reply)
    except Exception:  # noqa: BLE001 - any error of a user's verifier
        return None
    return None if score is None else float(score)


def rollout(engine: Engine, items: list[tuple[Task, dict]], group: int, params: SamplingParams,
            seed: int, identity: str = "") -> list[Rollout]:
    """`group` answers to each (task, example), all decoded together, each with its own seed (so a resumed run
    samples the same answers); P x G rollouts, group by group, each scored by its task's verifier, and 0 where it
    names itself (`identity`) unasked, as `eval chat` counts it: rewarded for its name on identity prompts alone,
    tiny's RL said it unasked 0.05 -> 0.16 of the time (docs/benchmarks.md)."""
    tok = engine.tok
    end = tok.special("<|im_end|>")
    prompts = [render_prompt(tok, ex["messages"][:-1]) for _, ex in items]
    reqs = [engine.submit(p, dataclasses.replace(params, seed=seed * 1_000_003 + i * group + g))
            for i, p in enumerate(prompts) for g in range(group)]
    while not all(r.done for r in reqs):
        engine.step()
    out = []
    for k, req in enumerate(reqs):
        reply = reply_of(tok, req)
        task, example = items[k // group]
        score = verify(task, example, reply)
        ended = req.stats.stop_reason == "stop"
        # an answer cut off at max_tokens scores 0, as a reply that never ends is no answer in the chat: else one that
        # says the name and rambles on ("by scratch by scratch ...", a tiny RL run) earns what one that stops does
        ok = ended and not names_itself(task, reply, identity)
        out.append(Rollout(task.name, req.prompt, req.tokens + [end] * ended, req.mask + [1] * ended,
                           accuracy=(score or 0.0) * ok, formatted=format_reward(reply) if ended else 0.0,
                           failed=score is None, tool_calls=req.stats.tool_calls, ended=ended))
    return out


def prompt_pool(task: Task, tok, rc, config, seq_len: int) -> list[tuple[Task, dict]]:
    """The (task, example) pairs RL practises on: rl.train_examples of the task and those of rl.mix, each from its
    task's rl_split, asked in the RL's tool setting, whose prompt leaves room in a context of seq_len tokens for a
    whole answer."""
    room = seq_len - rc.max_tokens - 1
    wanted = [(task, rc.train_examples)]
    for source in parse_mixture(rc.mix) if rc.mix else []:
        if source.is_file or source.name == task.name:
            raise UserError(f"rl.mix: {source.name!r} is {'a file' if source.is_file else 'rl.task itself'}; "
                            f"name other tasks, whose verifiers reward their answers")
        wanted.append((TASKS[source.name], int(source.weight)))
    pool = []
    for t, n in wanted:
        fits = [(t, ex) for ex in task_examples(t, t.rl_split, n, rc.seed, config, rc.tools)
                if len(render_prompt(tok, ex["messages"][:-1])) <= room]
        if not fits:
            raise UserError(f"no {t.name} prompt fits the context of {seq_len} tokens with "
                            f"rl.max_tokens={rc.max_tokens}")
        pool += fits
    return pool


def ptx_rows(run, init: str, tok) -> list:
    """PPO-ptx's data: the conversations the start checkpoint was fine-tuned on (INIT_data/train.jsonl, written by
    its sft or probe stage), packed as SFT packs them."""
    path = run.path / f"{init}_data" / "train.jsonl"
    if not path.exists():
        raise UserError(f"rl.ptx needs the conversations {init}/ was trained on, and {path} is missing "
                        f"(rerun `chatforge {init}`, or set rl.ptx=0)")
    conversations, _ = load_conversations(path)
    rows = render_and_pack(tok, conversations, run.config.sft.max_len, run.config.rl.seed, {})
    if not rows:
        raise UserError(f"rl.ptx: no usable conversation in {path}")
    return rows


def rl(run, resume: bool = False) -> dict:
    """The `rl` stage: the probe/ (or sft/) checkpoint -> rl/ checkpoint, metrics/rl.jsonl; resumes exactly."""
    rc = run.config.rl
    if min(rc.steps, rc.prompts, rc.group, rc.epochs, rc.ckpt_every) < 1 or rc.group < 2:
        raise UserError("rl.steps, rl.prompts, rl.epochs and rl.ckpt_every must be >= 1 and rl.group >= 2")
    if rc.reward not in ("task", "model"):
        raise UserError(f"rl.reward must be task or model, got {rc.reward!r}")
    device = pick_device()
    keep_freed_memory()
    dtype = autocast_dtype(run.config.pretrain.dtype, device)
    tok = load_tokenizer(run.path / "tokenizer")
    task = load_task(rc.task)
    scorer = load_reward_model(run.path / "reward", device) if rc.reward == "model" else None
    ckpt_dir = run.path / "rl"
    ckpt = load_state(ckpt_dir) if resume else None
    init = start_checkpoint(run.path)
    if ckpt is None:
        remove_checkpoint(ckpt_dir)
        model, state = load_model(run.path / init, device), TrainState()
    else:
        model, state = load_model(ckpt_dir, device), ckpt.state
        print(f"rl: resuming from step {state.step}")
    pool = prompt_pool(task, tok, rc, run.config, model.cfg.seq_len)
    ref = load_model(run.path / init, device).requires_grad_(False) if rc.kl > 0 else None
    ptx = ptx_rows(run, init, tok) if rc.ptx > 0 else []
    optimizer = make_optimizer(model, rc.lr, 0.0)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.optimizer)
    log = MetricsLog(run.path / "metrics" / "rl.jsonl", state.step)
    engine = Engine(model, tok, max_batch=min(rc.prompts * rc.group, MAX_BATCH),
                    tools=Tools(python=True) if rc.tools else None)
    params = SamplingParams(max_tokens=rc.max_tokens, temperature=rc.temperature)
    params = params if rc.ignore_eos else chat_params(tok, params)

    mixed = f" with {rc.mix}" if rc.mix else ""
    print(f"rl: GRPO from {init} on {task.name}{mixed}, {rc.steps} steps of {rc.prompts} prompts x {rc.group} "
          f"answers, reward from the {'reward model' if scorer else 'verifier'}")
    start_step, last_saved, row = state.step, None if ckpt is None else state.step, {}
    bar = progress_bar("rl", rc.steps, start_step)
    if ckpt is not None:
        restore_rng(ckpt.rng)
    t_last = time.time()
    while state.step < rc.steps:
        if progress(state.step, rc.steps, state.elapsed, rc.max_minutes) >= 1:
            print(f"rl: time budget of {rc.max_minutes} min reached at step {state.step}")
            break
        idx = batch_indices(len(pool), state.position, rc.prompts, rc.seed)
        state.position += rc.prompts
        t0 = time.time()
        rolls = rollout(engine, [pool[i] for i in idx], rc.group, params, rc.seed + state.step,
                        run.config.sft.identity)
        rollout_s = time.time() - t0
        rm_scores = scorer.score_ids([r.prompt + r.tokens for r in rolls], device) if scorer else None
        for k, r in enumerate(rolls):
            main = rm_scores[k] if rm_scores is not None else r.accuracy
            r.reward = rc.accuracy_weight * main + rc.format_weight * r.formatted
        rewards = torch.tensor([r.reward for r in rolls]).view(rc.prompts, rc.group)
        adv = group_advantages(rewards, rc.scale_rewards).view(-1)
        # Without the KL term an answer of advantage 0 adds nothing to the gradient, so only the others are run; the
        # loss still divides by every answer's tokens, so the update is the same. While most groups score alike
        # (early on, a hard task) this skips most of the step's training. One answer stays: the step is uniform.
        keep = [k for k in range(len(rolls)) if ref is not None or adv[k] != 0] or [0]
        groups = sorted({k // rc.group for k in keep})
        batch = ([rolls[g * rc.group].prompt for g in groups], [rolls[k].tokens for k in keep],
                 [groups.index(k // rc.group) for k in keep])
        mask = answer_mask([rolls[k].mask for k in keep]).to(device)
        adv, n_tokens = adv[keep].to(device), sum(sum(r.mask) for r in rolls)
        with torch.no_grad(), autocast(device, dtype):
            ref_logp = answer_logprobs(ref, *batch) if ref is not None else None
        if ptx:  # the step's rows follow from the step number alone, so a resumed run trains on the same
            sft_batch = [t.to(device) for t in collate([ptx[i] for i in batch_indices(
                len(ptx), state.step * rc.ptx_rows, rc.ptx_rows, rc.seed)], run.config.sft.max_len)]
        kls, clips, ptx_losses = [], [], []
        set_lr(optimizer, lr_multiplier(0.0, state.step, rc.warmup_steps, 0.0))
        for epoch in range(rc.epochs):
            with autocast(device, dtype):
                logp = answer_logprobs(model, *batch)
                sft_loss = packed_loss(model, *sft_batch) if ptx else None
            if epoch == 0:  # the weights the rollouts were sampled from: ratio 1, as PPO's first epoch has it
                old = logp.detach()
            loss, stats = grpo_loss(logp, old, adv, mask, rc.clip, rc.kl, ref_logp, n_tokens)
            if sft_loss is not None:
                loss = loss + rc.ptx * sft_loss
                ptx_losses.append(sft_loss.item())
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
            check_finite(loss.item(), grad_norm, state.step + 1, ckpt_dir, last_saved, "rl.lr")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            kls.append(stats["kl"])
            clips.append(stats["clip_frac"])
        engine.refresh_weights(model)
        state.step += 1
        state.elapsed += time.time() - t_last
        n = len(rolls)
        row = dict(reward=round(rewards.mean().item(), 4), accuracy=round(sum(r.accuracy for r in rolls) / n, 4),
                   format=round(sum(r.formatted for r in rolls) / n, 4),
                   response_len=round(sum(sum(r.mask) for r in rolls) / n, 2), kl=round(kls[-1], 5),
                   clip_frac=round(sum(clips) / len(clips), 4),
                   tool_call_rate=round(sum(r.tool_calls > 0 for r in rolls) / n, 4),
                   unfinished=round(sum(not r.ended for r in rolls) / n, 4),
                   verifier_failures=sum(r.failed for r in rolls), loss=round(loss.item(), 5),
                   grad_norm=round(grad_norm, 4), lr=optimizer.param_groups[0]["lr"], trained=len(keep),
                   rollout_s=round(rollout_s, 2),
                   step_s=round(time.time() - t0, 2))
        if rc.mix:  # the RL task's own accuracy among the mixed prompts
            mine = [r.accuracy for r in rolls if r.task == task.name]
            row["task_accuracy"] = round(sum(mine) / len(mine), 4) if mine else None
        if ptx_losses:
            row["ptx_loss"] = round(sum(ptx_losses) / len(ptx_losses), 4)
        if rm_scores is not None:
            row["rm_score"] = round(sum(rm_scores) / n, 4)
        log.write(state.step, **row)
        bar.set_postfix(reward=f"{row['reward']:.3f}", acc=f"{row['accuracy']:.3f}")
        bar.update(1)
        if state.step % rc.ckpt_every == 0 or state.step == rc.steps:
            save_state(ckpt_dir, model, optimizer, state)
            last_saved = state.step
        t_last = time.time()
    bar.close()
    if last_saved != state.step:
        save_state(ckpt_dir, model, optimizer, state)
    print(f"rl: {state.step} steps, {state.elapsed:.0f}s; last step reward {row.get('reward')}, "
          f"accuracy {row.get('accuracy')}")
    return {"steps": state.step, "train_seconds": round(state.elapsed, 1), "task": task.name, "init": init,
            **{k: row[k] for k in ("reward", "accuracy", "kl", "response_len") if k in row}}
