import math

import torch

from chatforge.config import apply_overrides, make_config
from chatforge.model.gpt import GPT
from chatforge.speedrun import TRAIN_MFU, estimate

PEAK = 4e11


def test_pretraining_costs_its_flops_at_the_expected_utilisation():
    config = make_config("tiny")
    with torch.device("meta"):
        flops = GPT(config.model).flops_per_token()
    tokens = config.pretrain.steps * config.pretrain.batch_size * config.model.seq_len
    assert math.isclose(estimate(config, "cpu", PEAK)["pretrain"], tokens * flops / (TRAIN_MFU["cpu"] * PEAK))


def test_steps_scale_the_estimate_and_budgets_cap_it():
    base = estimate(make_config("tiny"), "cpu", PEAK)
    longer = estimate(apply_overrides(make_config("tiny"), {"pretrain.steps": "1800", "sft.max_minutes": "1"}),
                      "cpu", PEAK)
    assert math.isclose(longer["pretrain"], 2 * base["pretrain"])
    assert base["sft"] > 60 and longer["sft"] == 60
    assert base["rl"] <= 60 * make_config("tiny").rl.max_minutes


def test_more_devices_train_faster_and_every_stage_is_estimated():
    config = make_config("d12")
    one, eight = estimate(config, "cuda:0", 989e12), estimate(config, "cuda:0", 989e12, processes=8)
    assert eight["pretrain"] < one["pretrain"] / 7
    assert list(one) == ["data", "tokenizer", "pretrain", "sft", "probe", "rl", "eval", "index", "export", "report"]
