import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from chatforge.errors import UserError
from chatforge.eval.arena import ELO, base_prompt, bradley_terry, eval_arena, outcomes, ratings
from chatforge.eval.chat import held_out
from chatforge.model.checkpoint import load_model, save_checkpoint
from chatforge.runs import checkpoints, open_run


def simulate(theta: np.ndarray, prompts: int, seed: int) -> np.ndarray:
    """Per-prompt results (P, K, K) of every pair meeting once per prompt, i beating j with the Bradley-Terry
    probability."""
    rng = np.random.default_rng(seed)
    k = len(theta)
    out = np.zeros((prompts, k, k))
    for i in range(k):
        for j in range(i + 1, k):
            won = rng.random(prompts) < 1 / (1 + np.exp(theta[j] - theta[i]))
            out[:, i, j], out[:, j, i] = won, ~won
    return out


def test_bradley_terry_recovers_known_strengths():
    theta = np.array([-1.0, 0.0, 0.5, 1.5])
    fit = bradley_terry(simulate(theta, 4000, seed=0).sum(0))
    assert np.allclose(fit, theta - theta.mean(), atol=0.08)
    assert abs(fit.mean()) < 1e-9


def test_two_players_win_rate_gives_the_elo_gap():
    wins = np.array([[0.0, 300.0], [100.0, 0.0]])  # p = 0.75: 400 * log10(3) = 190.8 points apart
    gap = ELO * (bradley_terry(wins, prior=0) @ [1, -1])
    assert gap == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert ELO * (bradley_terry(wins) @ [1, -1]) == pytest.approx(400 * math.log10(3), abs=1.0)  # the prior's tie


def test_ties_are_half_a_win_each():
    values = np.array([[1.0, 1.0, 0.0], [0.5, 0.0, np.nan], [np.nan, np.nan, 0.0]])
    r = outcomes(values)
    assert r[0].tolist() == [[0, 0.5, 1], [0.5, 0, 1], [0, 0, 0]]
    assert r[1].tolist() == [[0, 1, 1], [0, 0, 1], [0, 0, 0]]  # no answer (nan) loses to any answer
    assert r[2].tolist() == [[0, 0.5, 0], [0.5, 0, 0], [1, 1, 0]]  # and ties with no answer
    # 100 wins, 200 ties and no loss is 200 wins to 100: p = 2/3, 400 * log10(2) apart
    wins = np.array([[0, 100 + 200 / 2], [200 / 2, 0]])
    assert ELO * (bradley_terry(wins, prior=0) @ [1, -1]) == pytest.approx(400 * math.log10(2), abs=1e-6)
    assert np.allclose(bradley_terry(np.full((3, 3), 50.0) * (1 - np.eye(3))), 0)  # all ties: all equal


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_battles():
    theta = np.array([0.0, 0.4, 1.0])
    widths = []
    for prompts in (100, 1600):
        rated = ratings(simulate(theta, prompts, seed=1), ["a", "b", "c"])
        for r in rated.values():
            assert r["lo"] <= r["rating"] <= r["hi"]
        assert np.mean([r["rating"] for r in rated.values()]) == pytest.approx(1000, abs=0.1)
        assert [s for s, _ in sorted(rated.items(), key=lambda x: -x[1]["rating"])] == ["c", "b", "a"]
        widths.append(np.mean([r["hi"] - r["lo"] for r in rated.values()]))
    assert widths[1] < widths[0] / 2  # 16x the battles: about a quarter of the width
    assert ratings(simulate(theta, 100, seed=1), ["a", "b", "c"]) == ratings(simulate(theta, 100, seed=1),
                                                                           ["a", "b", "c"])  # seeded


def test_an_undefeated_contestant_gets_a_finite_rating():
    wins = np.array([[0.0, 360.0], [0.0, 0.0]])  # one virtual tie a pair: (360 + 1/2) to 1/2
    gap = ELO * (bradley_terry(wins) @ [1, -1])
    assert gap == pytest.approx(ELO * math.log(721), abs=0.01)
    rated = ratings(np.broadcast_to(np.array([[0.0, 1.0], [0.0, 0.0]]), (50, 2, 2)), ["rl", "base"])
    assert all(math.isfinite(v) for r in rated.values() for v in r.values())


def test_base_prompt_is_a_plain_text_conversation():
    text = base_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "Ada")
    assert text.endswith("\n\nSystem: Be brief.\n\nUser: Hi\n\nAssistant:")
    assert "I'm Ada" in text and "<|" not in text


def test_the_speedrun_rates_its_checkpoints(micro_run):
    """The eval stage's default kinds include the arena; eval/chat.json keeps the per-example scores it reads."""
    run = open_run(micro_run, save=False)
    names, examples = checkpoints(micro_run), held_out(run)
    arena = json.loads((micro_run / "eval" / "arena.json").read_text())
    assert arena["judge"] == "verifier" and arena["prompts"] == len(examples)
    assert set(arena["ratings"]) == set(names) == set(arena["rank"])
    pairs = len(names) * (len(names) - 1) // 2
    assert len(arena["wins"]) == pairs and arena["battles"] == pairs * len(examples)
    assert all(sum(wtl) == len(examples) for wtl in arena["wins"].values())
    for r in arena["ratings"].values():
        assert r["lo"] <= r["rating"] <= r["hi"]
    chat = json.loads((micro_run / "eval" / "chat.json").read_text())["sft"]
    assert len(chat["scores"]) == len(chat["replies"]) == len(examples)
    for name, task in chat["tasks"].items():  # the per-example scores are the task figures' own
        mine = [s for (t, _), s in zip(examples, chat["scores"], strict=True) if t.name == name and s is not None]
        assert round(sum(mine) / len(mine), 4) == task["score"]


def test_the_arena_refuses_stale_or_missing_answers(micro_run):
    run = open_run(micro_run, save=False)
    with pytest.raises(UserError, match="two contestants"):
        eval_arena(run, ["sft"])
    run.config.eval.chat_examples = 3  # other prompts than eval/chat.json's
    with pytest.raises(UserError, match="run `chatforge eval chat"):
        eval_arena(run, ["base", "sft"])
    run.config.eval.arena_judge = "reward"
    with pytest.raises(UserError, match="chatforge reward"):
        eval_arena(run, ["base", "sft"])
    run.config.eval.arena_judge = "crowd"
    with pytest.raises(UserError, match="arena_judge"):
        eval_arena(run, ["base", "sft"])


def test_the_reward_model_can_judge(micro_run, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for part in ("manifest.json", "tokenizer", "sft", "rl", "eval"):
        copy = shutil.copytree if (micro_run / part).is_dir() else shutil.copy
        copy(micro_run / part, run_dir / part)
    torch.manual_seed(0)  # a reward model with a random head: scores that differ from answer to answer
    save_checkpoint(run_dir / "reward", load_model(micro_run / "sft"))
    save_file({"weight": torch.randn(1, load_model(micro_run / "sft").cfg.n_embd), "bias": torch.zeros(1)},
              run_dir / "reward" / "head.safetensors")
    run = open_run(run_dir, save=False)
    run.config.eval.arena_judge = "reward"
    result, figures = eval_arena(run, ["sft", "rl"])
    assert figures["judge"] == "reward" and figures["wins"]["rl vs sft"][0] + figures["wins"]["rl vs sft"][2] > 0
    values = [a["value"] for s in result["samples"] for a in s["answers"].values() if a["value"] is not None]
    assert values and not set(values) <= {0.0, 0.5, 1.0}  # reward scores, not the verifiers'
