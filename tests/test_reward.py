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
    number_text,
    task_pairs,
    train_reward,
    wrong_number,
)
from chatforge.tasks.arithmetic import Arithmetic
from chatforge.tasks.common import NUMBER, last_number, reply_text


def test_bradley_terry_loss_by_hand():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.0))) / 2
    assert abs(bradley_terry_loss(chosen, rejected).item() - expected) < 1e-6
    with_margin = (math.log(1 + math.exp(-0.5)) + math.log(1 + math.exp(1.5))) / 2
    assert abs(bradley_terry_loss(chosen, rejected, margin=0.5).item() - with_margin) < 1e-6


def test_score_is_the_mean_token_score_of_each_sequence_own_tokens():
    torch.manual_seed(0)
    rm = RewardModel(GPT(GPTConfig(vocab_size=32, seq_len=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=2)))
    torch.nn.init.normal_(rm.head.weight)
    padded = rm.score_ids([[1, 2, 3], [4, 5, 6, 7, 8]], "cpu")
    alone = rm.score_ids([[1, 2, 3]], "cpu") + rm.score_ids([[4, 5, 6, 7, 8]], "cpu")
    assert torch.allclose(torch.tensor(padded), torch.tensor(alone), atol=1e-5) and padded[0] != padded[1]
    with torch.no_grad():
        per_token = rm.token_scores(torch.tensor([[1, 2, 3]]))[0]
    assert abs(per_token.mean().item() - alone[0]) < 1e-5 and per_token.std() > 0


def test_task_pairs_by_type():
    pairs = task_pairs(Arithmetic(), "train", 20, 0, None, n_correct=60)
    kinds = [k for k, _, _ in pairs]
    assert kinds.count("correct") == 60 and kinds.count("format") == kinds.count("concise") == 20
    for kind, chosen, rejected in pairs:
        assert chosen[:-1] == rejected[:-1] and chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
        if kind == "correct":  # the wrong answer contradicts the tool output in its own context
            output = last_number(next(p["text"] for p in chosen[-1]["content"] if p["type"] == "output"))
            right, wrong = reply_text(chosen[-1]["content"]), reply_text(rejected[-1]["content"])
            assert last_number(right) == output and last_number(wrong) != output
            assert chosen[-1]["content"][:-1] == rejected[-1]["content"][:-1]
            commas = "," in NUMBER.findall(right)[-1]  # the wrong number is written the same way
            assert NUMBER.findall(wrong)[-1] == number_text(last_number(wrong), commas)
        if kind == "concise":
            assert len(reply_text(rejected[-1]["content"])) > len(reply_text(chosen[-1]["content"]))
    held_out = task_pairs(Arithmetic(), "test", 20, 0, None)
    assert not {str(c[:-1]) for _, c, _ in pairs} & {str(c[:-1]) for _, c, _ in held_out}


def test_wrong_number_makes_each_mistake_written_like_the_answer():
    rng = random.Random(0)
    wrong = {wrong_number("There are 10,789 kites.", 10789, rng, [5382.0, 5407.0]) for _ in range(200)}
    values = {last_number(w) for w in wrong}
    assert 10789 not in values and all(NUMBER.findall(w)[-1] == number_text(last_number(w), True) for w in wrong)
    assert {5382, 5407, 10790, 10779} <= values  # an operand echoed, off by a little
    assert {10709, 10780, 20789} & values  # one digit changed
    assert wrong_number("no digits", 3, rng) is None


def test_reward_model_trains_and_drives_rlhf(micro_run, tmp_path):
    run = rl_run(micro_run, tmp_path, reward="model", kl=0.05, steps=2)
    run.config.reward.pairs, run.config.reward.correct_pairs, run.config.reward.test_pairs = 40, 40, 20
    figures = train_reward(run)
    assert 0 <= figures["rm_pair_acc"] <= 1 and set(figures["rm_pair_acc_by_type"]) <= {"correct", "format", "concise"}
    assert json.loads((run.path / "reward" / "pair_acc.json").read_text()) == figures
    rm = load_reward_model(run.path / "reward", "cpu")
    assert rm.head.weight.abs().sum() > 0
    rl(run)
    rows = [json.loads(ln) for ln in (run.path / "metrics" / "rl.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("rm_score" in r and r["kl"] >= 0 for r in rows)
