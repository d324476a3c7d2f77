import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from chatforge.errors import UserError
from chatforge.model.checkpoint import load_model
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.optim import make_optimizer
from chatforge.train import (
    MetricsLog,
    TrainState,
    batch_indices,
    check_finite,
    load_state,
    lr_multiplier,
    progress,
    restore_rng,
    save_state,
)

CFG = GPTConfig(vocab_size=97, seq_len=16, n_layer=2, n_embd=32, n_head=2, n_kv_head=1)


def read_jsonl(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_lr_schedule_warms_up_holds_and_warms_down():
    assert lr_multiplier(0.0, 0, 10, 0.3) == pytest.approx(0.1)
    assert lr_multiplier(0.5, 50, 10, 0.3) == 1.0
    assert lr_multiplier(0.85, 85, 10, 0.3) == pytest.approx(0.5)
    assert lr_multiplier(1.0, 100, 10, 0.3) == 0.0


def test_progress_follows_the_steps_or_the_time_budget_whichever_runs_out_first():
    assert progress(25, 100, 1000.0, 0.0) == 0.25  # no budget: steps only
    assert progress(25, 100, 30.0, 1.0) == 0.5  # 30 s of a 1-minute budget is further along than 25 of 100 steps
    assert progress(100, 100, 1.0, 1.0) == 1.0


def test_batch_indices_visit_every_item_once_per_epoch_and_resume_at_a_position():
    stream = batch_indices(10, 0, 35, seed=3)
    for epoch in range(3):
        assert sorted(stream[10 * epoch : 10 * epoch + 10]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a fresh order each epoch
    assert batch_indices(10, 7, 8, seed=3) == stream[7:15]  # across an epoch boundary too
    assert batch_indices(10, 0, 10, seed=4) != stream[:10]


def test_metrics_log_drops_rows_past_the_checkpoint_on_resume(tmp_path):
    path = tmp_path / "metrics" / "x.jsonl"
    log = MetricsLog(path)
    for step in range(1, 9):
        log.write(step, loss=1.0 / step)
    log.write(8, val_loss=0.5)
    MetricsLog(path, resume_step=5).write(6, loss=0.0)
    assert [(r["step"], r["loss"]) for r in read_jsonl(path)] == [(s, 1.0 / s) for s in range(1, 6)] + [(6, 0.0)]
    MetricsLog(path)  # a fresh start keeps nothing
    assert path.read_text() == ""


def draws() -> list:
    return [torch.rand(4).tolist(), np.random.rand(4).tolist(), [random.random() for _ in range(4)]]


def test_checkpoint_round_trip_restores_the_state_the_optimizer_and_the_rngs(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = make_optimizer(model, lr=3e-3, matrix_lr=0.02)
    x = torch.randint(0, CFG.vocab_size, (2, CFG.seq_len + 1))

    def step(m, o) -> float:
        loss = m(x[:, :-1], x[:, 1:])
        loss.backward()
        o.step()
        o.zero_grad(set_to_none=True)
        return loss.item()

    step(model, opt)
    assert load_state(tmp_path / "ckpt") is None
    state = TrainState(step=1, elapsed=2.5, position=16, extra={"best_val": 0.25})
    np.random.seed(1)
    random.seed(2)
    save_state(tmp_path / "ckpt", model, opt, state)
    expected_draws, expected_loss = draws(), step(model, opt)

    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # a new process's RNGs
    ckpt = load_state(tmp_path / "ckpt")
    assert ckpt.state == state
    again = load_model(tmp_path / "ckpt")
    opt2 = make_optimizer(again, lr=3e-3, matrix_lr=0.02)
    opt2.load_state_dict(ckpt.optimizer)
    restore_rng(ckpt.rng)
    assert draws() == expected_draws
    assert step(again, opt2) == expected_loss


def test_nan_guard_names_the_last_good_checkpoint_and_the_lr_knob():
    check_finite(2.5, 1.0, 7, Path("runs/x/sft"), 5, "sft.lr")
    with pytest.raises(UserError, match=r"loss nan.*step 7.*checkpoint \(step 5\) is in runs/x/sft.*Lower sft.lr"):
        check_finite(float("nan"), 1.0, 7, Path("runs/x/sft"), 5, "sft.lr")
    with pytest.raises(UserError, match="gradient norm inf.*no checkpoint was saved yet"):
        check_finite(2.5, float("inf"), 3, Path("runs/x/sft"), None, "sft.lr")


class Killed(Exception):
    pass


def test_sft_killed_after_a_checkpoint_resumes_exactly(micro_run, tmp_path, monkeypatch, capsys):
    from chatforge.posttrain.sft import sft
    from chatforge.runs import open_run

    overrides = {"sft.steps": "12", "sft.ckpt_every": "5"}
    whole = open_run(shutil.copytree(micro_run, tmp_path / "whole"), overrides=overrides)
    summary = sft(whole)
    cut = open_run(shutil.copytree(micro_run, tmp_path / "cut"), overrides=overrides)
    write = MetricsLog.write

    def write_then_die(self, step, **row):  # killed after logging step 8: the checkpoint is step 5's
        write(self, step, **row)
        if step == 8:
            raise Killed

    monkeypatch.setattr(MetricsLog, "write", write_then_die)
    with pytest.raises(Killed):
        sft(cut)
    monkeypatch.undo()
    assert [r["step"] for r in read_jsonl(cut.path / "metrics" / "sft.jsonl")] == list(range(1, 9))
    assert load_state(cut.path / "sft").state.step == 5
    capsys.readouterr()
    resumed = sft(cut, resume=True)
    assert "resuming from step 5" in capsys.readouterr().out

    rows = read_jsonl(whole.path / "metrics" / "sft.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert [r["step"] for r in rows if "val_loss" in r] == [5, 10, 12]
    assert read_jsonl(cut.path / "metrics" / "sft.jsonl") == rows  # losses, grad norms, val losses
    assert resumed["val_loss"] == summary["val_loss"]
    a, b = load_model(whole.path / "sft").state_dict(), load_model(cut.path / "sft").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    state = load_state(cut.path / "sft").state
    assert (state.step, state.position) == (12, 12 * cut.config.sft.batch_size)


def test_sft_time_budget_stops_early_and_leaves_a_checkpoint(micro_run, tmp_path, capsys):
    from chatforge.posttrain.sft import sft
    from chatforge.runs import open_run

    run = open_run(shutil.copytree(micro_run, tmp_path / "budget"),
                   overrides={"sft.steps": "100000", "sft.max_minutes": "0.01"})
    summary = sft(run)
    assert "time budget of 0.01 min reached" in capsys.readouterr().out
    assert 0 < summary["steps"] < 100000
    rows = read_jsonl(run.path / "metrics" / "sft.jsonl")
    assert rows[-1]["step"] == summary["steps"] and "val_loss" in rows[-1]
    assert rows[-1]["lr_mult"] < 0.9  # the LR decays with the budget, not with the 100,000 steps
    assert load_state(run.path / "sft").state.step == summary["steps"]
