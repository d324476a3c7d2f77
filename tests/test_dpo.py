import json
import math

import torch
from conftest import chatforge
from test_grpo import rl_run

from chatforge.eval.run import evaluate
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.rl.dpo import answer_pairs, dpo, dpo_loss, sequence_logprobs
from chatforge.tasks.arithmetic import Arithmetic
from chatforge.tasks.common import last_number, reply_text


def test_dpo_loss_by_hand():
    loss, stats = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), torch.tensor([-1.5, -2.0]),
                           torch.tensor([-1.5, -2.0]), beta=0.1)
    # implicit reward margins: 0.1 * ((-1 + 1.5) - (-2 + 1.5)) = 0.1 and 0.1 * ((-3 + 2) - (-1 + 2)) = -0.2
    expected = (math.log(1 + math.exp(-0.1)) + math.log(1 + math.exp(0.2))) / 2
    assert abs(loss.item() - expected) < 1e-6 and stats["reward_acc"] == 0.5 and stats["dpo"] == loss.item()
    # RPO: the chosen answers' NLL per token, (1 + 3) / 8 tokens, times the weight
    rpo, _ = dpo_loss(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0]), torch.tensor([-1.5, -2.0]),
                      torch.tensor([-1.5, -2.0]), beta=0.1, sft_weight=0.5, chosen_tokens=8)
    assert abs(rpo.item() - (expected + 0.5 * 4 / 8)) < 1e-6


def test_sequence_logprobs_sum_the_trained_tokens():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=32, seq_len=16, n_layer=1, n_embd=32, n_head=2, n_kv_head=2))
    torch.nn.init.normal_(model.lm_head.weight)
    ids, mask = [1, 2, 3, 4, 5], [0, 0, 1, 1, 0]
    got = sequence_logprobs(model, [(ids, mask), ([7, 8], [0, 1])], "cpu", None)
    logp = torch.log_softmax(model(torch.tensor([ids]))[0], -1)
    assert torch.allclose(got[0], logp[1, 3] + logp[2, 4], atol=1e-5)


def test_answer_pairs_prefer_the_right_number():
    for chosen, rejected in answer_pairs(Arithmetic(), 10, 0, None):
        assert chosen[:-1] == rejected[:-1]
        assert last_number(reply_text(chosen[-1]["content"])) != last_number(reply_text(rejected[-1]["content"]))


def test_dpo_stage_and_rl_evaluation(micro_run, tmp_path):
    run = rl_run(micro_run, tmp_path)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"say {i}", "chosen": f"{i}", "rejected": "no"}) + "\n"
                             for i in range(8)))
    run.config.dpo.data = str(pairs)
    metrics = dpo(run)
    rows = [json.loads(ln) for ln in (run.path / "metrics" / "dpo.jsonl").read_text().splitlines()]
    assert metrics["pairs"] == 8 and len(rows) == run.config.dpo.steps and rows[0]["loss"] > 0
    assert rows[0]["dpo"] == round(math.log(2), 4)  # the first step: the policy is still the reference
    figures = evaluate(run, kinds=["rl"])["rl"]
    assert figures["rl_task"] == "arithmetic" and figures["n"] == run.config.rl.eval_examples
    assert figures["dpo_gain_pts"] == round(100 * (figures["dpo_acc"] - figures["start_acc"]), 2)
    assert figures["rl_gain_pts"] is None and (run.path / "eval" / "rl.json").exists()


def test_on_demand_commands_need_the_chat_model(tmp_path):
    for cmd in ("dpo", "reward", "distill"):
        out = chatforge(cmd, "--run", str(tmp_path / "new"), "--preset", "micro", check=False)
        assert out.returncode == 2 and "stage 'sft' has not finished" in out.stderr
