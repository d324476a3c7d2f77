import json
import shutil
import signal
import subprocess
import sys
import time

from conftest import chatforge


def read_jsonl(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_loss_falls_and_beats_the_unigram_baseline(micro_run):
    rows = [r for r in read_jsonl(micro_run / "metrics" / "pretrain.jsonl") if "loss" in r]
    assert len(rows) == 40
    assert sum(r["loss"] for r in rows[-5:]) / 5 < rows[0]["loss"] - 0.5
    metrics = json.loads((micro_run / "manifest.json").read_text())["stages"]["pretrain"]["metrics"]
    assert metrics["val_bpb"] < metrics["unigram_bpb"]
    assert (micro_run / "base" / "model.safetensors").exists() and (micro_run / "base" / "config.json").exists()


def fresh_copy(micro_run, dst):
    shutil.copytree(micro_run, dst)
    for d in ("base", "sft", "metrics"):
        shutil.rmtree(dst / d, ignore_errors=True)
    return dst


ARGS = ["--pretrain.steps=400", "--pretrain.ckpt_every=10", "--pretrain.eval_every=1000"]


def test_kill_and_resume_reproduces_the_uninterrupted_losses(micro_run, tmp_path):
    a = fresh_copy(micro_run, tmp_path / "a")
    chatforge("pretrain", "--run", str(a), "--force", *ARGS)
    b = fresh_copy(micro_run, tmp_path / "b")
    proc = subprocess.Popen([sys.executable, "-m", "chatforge", "pretrain", "--run", str(b), "--force", *ARGS],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = b / "base" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["step"] >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["step"]
    assert killed_at < 400, "the run finished before it could be killed"
    assert json.loads((b / "manifest.json").read_text())["stages"]["pretrain"]["status"] == "running"
    out = chatforge("pretrain", "--run", str(b), *ARGS)
    assert f"resuming from step {killed_at}" in out.stdout
    losses_a = [r["loss"] for r in read_jsonl(a / "metrics" / "pretrain.jsonl")]
    losses_b = [r["loss"] for r in read_jsonl(b / "metrics" / "pretrain.jsonl")]
    assert len(losses_a) == 400 and losses_b == losses_a


def test_time_budget_stops_early_and_still_leaves_a_model(micro_run, tmp_path):
    run = fresh_copy(micro_run, tmp_path / "budget")
    out = chatforge("pretrain", "--run", str(run), "--force", "--pretrain.steps=100000",
                    "--pretrain.max_minutes=0.02")
    assert "time budget" in out.stdout
    steps = json.loads((run / "manifest.json").read_text())["stages"]["pretrain"]["metrics"]["steps"]
    assert 0 < steps < 100000
    assert (run / "base" / "model.safetensors").exists()
