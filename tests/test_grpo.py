import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from chatforge.errors import UserError
from chatforge.infer.engine import Request, SamplingParams
from chatforge.model.checkpoint import load_model
from chatforge.posttrain.sft import collate, packed_loss
from chatforge.rl.common import answer_logprobs, answer_mask, load_task, pad, read_pairs, token_logprobs
from chatforge.rl.grpo import format_reward, group_advantages, grpo_loss, prompt_pool, ptx_rows, rl, rollout
from chatforge.runs import open_run
from chatforge.tasks.arithmetic import Arithmetic
from chatforge.tasks.common import reply_text
from chatforge.tokenizer.bpe import load_tokenizer


class FlakyTask(Arithmetic):
    """Arithmetic whose verifier raises on even answers and returns None on odd ones below 50."""

    def score(self, example, reply):
        if example["answer"] % 2 == 0:
            raise RuntimeError("checker crashed")
        return None if example["answer"] < 50 else super().score(example, reply)


def flaky_task():
    return FlakyTask()


class ParityTask(Arithmetic):
    """A reward every group varies on: whether the reply's length is odd."""

    def score(self, example, reply):
        return float(len(reply_text(reply)) % 2)


def rl_run(micro_run, tmp_path, name="r", **rl):
    """A run holding the micro run's tokenizer and a chat model (its sft/), for RL stages to train from."""
    path = tmp_path / name
    path.mkdir()
    for d in ("tokenizer", "sft", "sft_data"):
        shutil.copytree(micro_run / d, path / d)
    overrides = {f"rl.{k}": str(v) for k, v in rl.items()}
    return open_run(path, "micro", overrides=overrides)


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    std = math.sqrt(4 * 0.25 / 3)  # Bessel-corrected
    a = 0.5 / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards, scale=True), torch.tensor([[a, -a, -a, a], [0.0] * 4]))
    assert torch.equal(group_advantages(rewards, scale=False), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4]))


def test_grpo_loss_by_hand():
    old = torch.zeros(2, 3)
    logp = torch.tensor([[0.1, -0.5, 9.0], [0.5, -0.5, 9.0]])  # the last column is padding
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logp, old, adv, mask, clip=0.2)
    # adv +1: -min(r, clip(r)) = -1.1052 and -0.6065 (r = e^-0.5 is below 0.8: the unclipped, lower one counts)
    # adv -1: -min(-r, -clip(r)) = 1.6487 (r = e^0.5 counts in full) and 0.8 (e^-0.5 held at 0.8: clipped)
    expected = (-math.exp(0.1) - math.exp(-0.5) + math.exp(0.5) + 0.8) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.25) and stats["kl"] == 0.0


def test_answers_of_zero_advantage_can_be_left_out():
    torch.manual_seed(0)
    old, mask = torch.randn(3, 4), torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    logp = (old + 0.3 * torch.randn(3, 4)).requires_grad_()
    adv = torch.tensor([1.0, 0.0, -0.5])
    full, _ = grpo_loss(logp, old, adv, mask, 0.2)
    full.backward()
    grad, logp.grad = logp.grad.clone(), None
    kept, _ = grpo_loss(logp[[0, 2]], old[[0, 2]], adv[[0, 2]], mask[[0, 2]], 0.2, n_tokens=mask.sum().item())
    kept.backward()
    assert kept.item() == pytest.approx(full.item()) and torch.allclose(logp.grad, grad) and grad[1].abs().sum() == 0


def test_clipping_stops_the_gradient_at_its_limit():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[0.5, 0.1]], requires_grad=True)  # ratios e^0.5 (past 1.2) and e^0.1 (inside)
    loss, stats = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip=0.2)
    loss.backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] == pytest.approx(-math.exp(0.1) / 2)
    assert stats["clip_frac"] == 0.5
    logp.grad = None
    loss, stats = grpo_loss(logp, old, torch.tensor([1.0]), torch.ones(1, 2), clip=100.0)  # no clip: plain ratio
    assert loss.item() == pytest.approx(-(math.exp(0.5) + math.exp(0.1)) / 2) and stats["clip_frac"] == 0


def test_kl_term_at_its_limits():
    old = torch.zeros(1, 2)
    logp = torch.tensor([[-1.0, -2.0]])
    mask = torch.ones(1, 2)
    adv = torch.tensor([0.0])  # no policy gradient: the loss is the KL term alone
    loss, stats = grpo_loss(logp, old, adv, mask, 0.2, kl_coef=1.0, ref_logp=logp.clone())
    assert loss.item() == 0 and stats["kl"] == 0  # the reference itself: no KL
    ref = torch.tensor([[-1.5, -1.0]])
    d = ref - logp
    k3 = (torch.exp(d) - d - 1).mean().item()
    loss, stats = grpo_loss(logp, old, adv, mask, 0.2, kl_coef=0.5, ref_logp=ref)
    assert stats["kl"] == pytest.approx(k3) and loss.item() == pytest.approx(0.5 * k3) and k3 > 0
    loss, _ = grpo_loss(logp, old, adv, mask, 0.2, kl_coef=0.0, ref_logp=ref)
    assert loss.item() == 0


def test_format_reward():
    assert format_reward([{"type": "think", "text": "7*8"}, {"type": "text", "text": "56"}]) == 1
    assert format_reward([{"type": "think", "text": "7*8"}, {"type": "python", "text": "7*8"},
                          {"type": "output", "text": "56"}, {"type": "text", "text": "56"}]) == 1
    assert format_reward("56") == 0
    assert format_reward([{"type": "think", "text": "7*8"}, {"type": "text", "text": " "}]) == 0
    assert format_reward([{"type": "text", "text": "56"}, {"type": "think", "text": "x"}]) == 0


def test_pad_marks_the_trained_targets():
    x, y, m = pad([([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6], [0, 1])])
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]] and y.tolist() == [[2, 3, 4], [6, 0, 0]]
    assert m.tolist() == [[0, 1, 1], [1, 0, 0]]



def test_answer_logprobs_share_the_prompt_and_equal_whole_sequences():
    """A group's prompt runs once, left-padded; log-probabilities and gradients equal each whole sequence's."""
    from chatforge.model.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]
    owner = [0, 0, 1, 1, 1, 2]
    answers = [[20, 21, 22], [23], [24, 25, 26, 27, 28], [29, 30], [31], [32, 33, 34, 35]]
    mask = answer_mask([[1] * len(a) for a in answers])
    assert mask.shape == (6, 5) and mask.sum() == sum(map(len, answers))
    shared = answer_logprobs(model, prompts, answers, owner)
    (shared * mask).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    x, y, m = pad([(prompts[o] + a, [0] * len(prompts[o]) + [1] * len(a)) for o, a in zip(owner, answers, strict=True)])
    whole = token_logprobs(model, x, y)
    (whole * m).sum().backward()
    for b, (o, a) in enumerate(zip(owner, answers, strict=True)):
        start = len(prompts[o]) - 1
        torch.testing.assert_close(shared[b, : len(a)], whole[b, start : start + len(a)], atol=1e-5, rtol=1e-5)
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-4)

def test_load_task_by_name_or_module_function():
    assert load_task("arithmetic").name == "arithmetic"
    assert isinstance(load_task("test_grpo:flaky_task"), FlakyTask)
    assert isinstance(load_task("test_grpo:FlakyTask"), FlakyTask)
    for bad in ("nope", "no_such_module:x", "test_grpo:missing", "json:JSONDecoder"):
        with pytest.raises(UserError):
            load_task(bad)


def test_read_pairs_plain_and_conversational(tmp_path):
    p = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello"}],
             "rejected": [{"role": "assistant", "content": "go away"}]},
            {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
             "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = read_pairs(p)
    assert pairs[0] == ([{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}])
    assert pairs[1][1][-1]["content"] == "go away" and pairs[2][0][-1]["content"] == "b"
    p.write_text('{"prompt": "x", "chosen": "y"}\n')
    with pytest.raises(UserError, match="pairs.jsonl:1"):
        read_pairs(p)


def test_rollouts_train_on_sampled_tokens_only(micro_run):
    """Tool outputs the engine pastes in (mask 0) stay out of the loss; an answer that ended gets its <|im_end|>; one
    cut off at max_tokens scores 0 though its words are right."""
    tok = load_tokenizer(micro_run / "tokenizer")

    class Engine:  # answers as the real engine records them: one with a python call and its output, one cut off
        def __init__(self):
            self.tok, self.reqs = tok, []

        def submit(self, prompt, params):
            ids = [tok.special("<|python_start|>"), *tok.encode("6*7"), tok.special("<|python_end|>")]
            out = [tok.special("<|output_start|>"), *tok.encode("42"), tok.special("<|output_end|>")]
            text = tok.encode("6 * 7 = 42.")
            req = Request(len(self.reqs), prompt, params, tokens=ids + out + text,
                          mask=[1] * len(ids) + [0] * len(out) + [1] * len(text), done=True)
            req.stats.stop_reason, req.stats.tool_calls = ("stop", 1) if len(self.reqs) % 2 == 0 else ("length", 1)
            self.reqs.append(req)
            return req

    ex = {"messages": [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "42"}], "answer": 42}
    ended, cut = rollout(Engine(), [(Arithmetic(), ex)], 2, SamplingParams(), seed=0)
    assert ended.tokens[-1] == tok.special("<|im_end|>") and ended.mask[-1] == 1 and ended.accuracy == 1
    assert cut.tokens == ended.tokens[:-1] and cut.mask == ended.mask[:-1]
    assert cut.accuracy == 0 and not cut.ended and ended.ended
    start, end = ended.tokens.index(tok.special("<|output_start|>")), ended.tokens.index(tok.special("<|output_end|>"))
    assert ended.mask == [1] * start + [0] * (end + 1 - start) + [1] * (len(ended.tokens) - end - 1)
    assert ended.tool_calls == 1 and ended.task == "arithmetic"


def test_a_reply_that_names_itself_unasked_scores_0_as_eval_chat_counts_it(micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")

    class Engine:  # every answer says the name, then the right number
        def __init__(self):
            self.tok = tok

        def submit(self, prompt, params):
            ids = tok.encode("I'm chatforge. 6 * 7 = 42.")
            req = Request(0, prompt, params, tokens=ids, mask=[1] * len(ids), done=True)
            req.stats.stop_reason = "stop"
            return req

    sum_ = {"messages": [{"role": "user", "content": "6*7?"}, {"role": "assistant", "content": "42"}], "answer": 42}
    who = {"messages": [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "chatforge"}],
           "answer": "chatforge", "avoid": "", "metric": "identity_acc"}
    items = [(Arithmetic(), sum_), (load_task("identity"), who)]
    assert [r.accuracy for r in rollout(Engine(), items, 1, SamplingParams(), seed=0, identity="chatforge")] == [0, 1]
    assert [r.accuracy for r in rollout(Engine(), items, 1, SamplingParams(), seed=0, identity="Ada")] == [1, 1]


def test_mixed_tasks_join_the_practice_each_scored_by_its_own_verifier(micro_run, tmp_path):
    run = rl_run(micro_run, tmp_path, mix="identity:8", steps=1, prompts=4)
    rc, tok = run.config.rl, load_tokenizer(run.path / "tokenizer")
    pool = prompt_pool(load_task(rc.task), tok, rc, run.config, 256)
    assert [t.name for t, _ in pool].count("identity") == 8 and pool[0][0].name == "arithmetic"
    rl(run)
    row = json.loads((run.path / "metrics" / "rl.jsonl").read_text())
    assert "task_accuracy" in row
    for mix, why in (("arithmetic:4", "rl.task itself"), ("chats.jsonl:1", "a file")):
        rc.mix = mix
        with pytest.raises(UserError, match=why):
            prompt_pool(load_task(rc.task), tok, rc, run.config, 256)


def test_a_failing_verifier_is_zero_reward_logged_not_fatal(micro_run, tmp_path):
    run = rl_run(micro_run, tmp_path, task="test_grpo:flaky_task", steps=2, prompts=4)
    metrics = rl(run)
    rows = [json.loads(ln) for ln in (run.path / "metrics" / "rl.jsonl").read_text().splitlines()]
    assert metrics["steps"] == 2 and len(rows) == 2
    failures = sum(r["verifier_failures"] for r in rows)
    assert failures > 0 and all(r["accuracy"] <= 1 - r["verifier_failures"] / 16 for r in rows)
    assert {"reward", "accuracy", "response_len", "kl", "clip_frac", "tool_call_rate", "unfinished"} <= set(rows[0])


def test_resume_is_exact(micro_run, tmp_path):
    settings = dict(task="test_grpo:ParityTask", steps=3, ckpt_every=1, kl=0.1, epochs=2, temperature=1.5, ptx=0.5)
    straight = rl_run(micro_run, tmp_path, "straight", **settings)
    rl(straight)
    stopped = rl_run(micro_run, tmp_path, "stopped", **{**settings, "steps": 1})
    rl(stopped)
    stopped.config.rl.steps = 3
    rl(stopped, resume=True)
    a = load_file(straight.path / "rl" / "model.safetensors")
    b = load_file(stopped.path / "rl" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sft = load_file(straight.path / "sft" / "model.safetensors")
    assert not torch.equal(a["lm_head.weight"], sft["lm_head.weight"])

    def rows(run):  # the metrics, less the wall-clock ones
        lines = (run.path / "metrics" / "rl.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(ln).items() if k not in ("rollout_s", "step_s")} for ln in lines]
    assert rows(straight) == rows(stopped)
    lr = straight.config.rl.lr  # warmed up over the first 10 steps: Adam's first steps move every weight by lr
    assert [r["lr"] for r in rows(straight)] == pytest.approx([lr / 10, 2 * lr / 10, 3 * lr / 10])


def test_ptx_keeps_the_start_checkpoints_conversations_learnt(micro_run, tmp_path):
    settings = dict(task="test_grpo:ParityTask", steps=3, lr=1e-3, warmup_steps=1, temperature=1.5)
    runs = {ptx: rl_run(micro_run, tmp_path, f"ptx{ptx}", ptx=ptx, **settings) for ptx in (0, 2)}
    tok = load_tokenizer(micro_run / "tokenizer")
    x, y, doc = collate(ptx_rows(runs[2], "sft", tok)[:8], runs[2].config.sft.max_len)

    def nll(path):
        with torch.no_grad():
            return packed_loss(load_model(path, "cpu"), x, y, doc).item()
    start = nll(micro_run / "sft")
    for run in runs.values():
        rl(run)
    rows = [json.loads(ln) for ln in (runs[2].path / "metrics" / "rl.jsonl").read_text().splitlines()]
    assert all(r["ptx_loss"] > 0 for r in rows)
    assert nll(runs[2].path / "rl") < min(start, nll(runs[0].path / "rl"))
    shutil.rmtree(runs[2].path / "sft_data")
    with pytest.raises(UserError, match="sft_data"):
        rl(runs[2])
