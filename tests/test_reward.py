import json
import math
import random

import torch
from test_grpo import rl_run

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.rl.grpo import rl
from chatforge.rl.reward import (
    RewardModel,
    bradley_terry_loss,
    load_reward_model,
    task_pairs,
    train_reward,
    wrong_number,
)
from chatforge.tasks.arithmetic import Arithmetic
from chatforge.tasks.common import last_number, reply_text


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert abs(bradley_terry_loss(chosen, rejected).item() - expected) < 1e-6
    with_margin = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(1.5))) / 2
    assert abs(bradley_terry_loss(chosen, rejected, margin=0.5).item() - with_margin) < 1e-6


def test_score_is_read_at_each_sequence_own_last_token():
    torch.manual_seed(0)
    rm = RewardModel(GPT(GPTConfig(vocab_size=32, seq_len=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=2)))
    torch.nn.init.normal_(rm.head.weight)
    padded = rm.score_ids([[1, 2, 3], [4, 5, 6, 7, 8]], "cpu")
    alone = rm.score_ids([[1, 2, 3]], "cpu") + rm.score_ids([[4, 5, 6, 7, 8]], "cpu")
    assert torch.allclose(torch.tensor(padded), torch.tensor(alone), atol=1e-5) and padded[0] != padded[1]


def test_task_pairs_by_type():
    pairs = task_pairs(Arithmetic(), "train", 20, 0, None)
    kinds = [k for k, _, _ in pairs]
    assert kinds.count("correct") == kinds.count("format") == kinds.count("concise") == 20
    for kind, chosen, rejected in pairs:
        assert chosen[:-1] == rejected[:-1] and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
        if kind == "correct":  # the wrong answer contradicts the tool output in its own context
            output = last_number(next(p["text"] for p in chosen[-1]["content"] if p["type"] == "output"))
            assert last_number(reply_text(chosen[-1]["content"])) == output
            assert last_number(reply_text(rejected[-1]["content"])) != output
            assert chosen[-1]["content"][:-1] == rejected[-1]["content"][:-1]
        if kind == "concise":
            assert len(reply_text(rejected[-1]["content"])) > len(reply_text(chosen[-1]["content"]))
    assert wrong_number("no digits", 3, random.Random(0)) is None


def test_reward_model_trains_and_drives_rlhf(micro_run, tmp_path):
    run = rl_run(micro_run, tmp_path, reward="model", kl=0.05, steps=2)
    run.config.reward.pairs = 200  # the micro context holds a part of them
    figures = train_reward(run)
    assert 0 <= figures["rm_pair_acc"] <= 1 and set(figures["rm_pair_acc_by_type"]) <= {"correct", "format", "concise"}
    assert json.loads((run.path / "reward" / "pair_acc.json").read_text()) == figures
    rm = load_reward_model(run.path / "reward", "cpu")
    assert rm.head.weight.abs().sum() > 0
    rl(run)
    rows = [json.loads(ln) for ln in (run.path / "metrics" / "rl.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("rm_score" in r and r["kl"] >= 0 for r in rows)
