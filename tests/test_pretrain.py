import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
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


def test_metrics_report_mfu(micro_run):
    rows = read_jsonl(micro_run / "metrics" / "pretrain.jsonl")
    assert all(r["mfu"] > 0 and r["tok_s"] > 0 for r in rows)
    assert json.loads((micro_run / "manifest.json").read_text())["stages"]["pretrain"]["metrics"]["mfu"] > 0


def test_mfu_keeps_the_best_peak_measured_at_evaluations(micro_run, tmp_path, monkeypatch):
    # A CPU peak read low at a busy start must not stick: evaluations re-measure and keep the maximum, so a
    # later, lower reading does not bring it back down either.
    from chatforge.model.gpt import GPT
    from chatforge.pretrain import mfu, train
    from chatforge.runs import open_run

    readings = iter([1e9, 1e11])
    monkeypatch.setattr(mfu, "measure_matmul_peak", lambda *a, **kw: next(readings, 1e10))
    run = open_run(fresh_copy(micro_run, tmp_path / "mfu"), overrides={
        "pretrain.steps": "12", "pretrain.eval_every": "5", "pretrain.sample_tokens": "0"})
    summary = train.pretrain(run)
    flops_per_token = GPT(run.config.model).flops_per_token()
    peaks = [flops_per_token * r["tok_s"] / r["mfu"] for r in read_jsonl(run.path / "metrics" / "pretrain.jsonl")]
    assert len(peaks) == 12
    assert all(0.9e9 < p < 1.1e9 for p in peaks[:4])  # the start's reading until the first evaluation (step 5)
    assert all(0.9e11 < p < 1.1e11 for p in peaks[4:])  # step 5 on: 1e11, and the later 1e10 readings lose
    assert 0.9e11 < flops_per_token * summary["tok_s"] / summary["mfu"] < 1.1e11


def test_depth_derives_the_batch_and_the_steps(micro_run, tmp_path):
    # micro's scaling parameters: 4 x 64^2 attention + 3 x 64 x 192 SwiGLU + 512 x 64 head = 86,016; its d12 anchor
    # (vocab 512): 12 x (4 x 768^2 + 3 x 768 x 2048) + 512 x 768 = 85,327,872. At 1 token per parameter the batch is
    # 2^19 x (86,016 / (10.5 x 85,327,872))^0.383 = 15,163 tokens -> 2^14, and the steps 86,016 / 2^14 = 5.25 -> 5.
    run = fresh_copy(micro_run, tmp_path / "derived")
    out = chatforge("pretrain", "--run", str(run), "--force", "--pretrain.steps=0", "--pretrain.batch_tokens=-1",
                    "--pretrain.param_data_ratio=1", "--pretrain.eval_every=1000")
    assert "16,384 tokens/step (derived from depth) (1 x 16 x 8 x 128), 5 steps (derived from depth)" in out.stdout
    assert len(read_jsonl(run / "metrics" / "pretrain.jsonl")) == 5
    metrics = json.loads((run / "manifest.json").read_text())["stages"]["pretrain"]["metrics"]
    assert (metrics["steps"], metrics["tokens"]) == (5, 5 * 2**14)
    # an explicit batch keeps its own size and says nothing about depth; the steps follow it: 86,016 / 4096 = 21
    out = chatforge("pretrain", "--run", str(run), "--force", "--pretrain.steps=0", "--pretrain.batch_tokens=4096",
                    "--pretrain.param_data_ratio=1", "--pretrain.eval_every=1000")
    assert "4,096 tokens/step (1 x 4 x 8 x 128), 21 steps (derived from depth)" in out.stdout


def test_evaluations_log_greedy_samples_of_the_fixed_prompts(micro_run):
    from chatforge.pretrain.train import SAMPLE_PROMPTS

    evals = [r for r in read_jsonl(micro_run / "metrics" / "pretrain.jsonl") if "val_bpb" in r]
    assert evals and all(len(r["samples"]) == len(SAMPLE_PROMPTS) for r in evals)
    for r in evals:
        for text, prompt in zip(r["samples"], SAMPLE_PROMPTS, strict=True):
            assert text.startswith(prompt) and len(text) > len(prompt)


def torchrun(*args, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "chatforge", "--", *args]  # "--": torchrun would read --run as its own --run-path
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)


def test_ddp_two_gloo_processes_match_one_at_the_same_global_batch(micro_run, tmp_path):
    # fp32 so the only difference is the order of the gradient sums; batch_tokens fixes the global batch
    args = ["--force", "--pretrain.steps=8", "--pretrain.eval_every=8", "--pretrain.dtype=float32",
            "--pretrain.batch_tokens=2048"]
    one = fresh_copy(micro_run, tmp_path / "one")
    chatforge("pretrain", "--run", str(one), "--pretrain.batch_size=8", *args)
    two = fresh_copy(micro_run, tmp_path / "two")
    out = torchrun("pretrain", "--run", str(two), "--pretrain.batch_size=4", *args, nproc=2)
    assert "(2 x 2 x 4 x 128)" in out.stdout  # 2 processes x 2 micro-batches x 4 rows x 128 tokens
    rows_one = read_jsonl(one / "metrics" / "pretrain.jsonl")
    rows_two = read_jsonl(two / "metrics" / "pretrain.jsonl")
    assert len(rows_one) == len(rows_two) == 8
    for a, b in zip(rows_one, rows_two, strict=True):
        assert abs(a["loss"] - b["loss"]) < 2e-3
    metrics = json.loads((two / "manifest.json").read_text())["stages"]["pretrain"]["metrics"]
    assert metrics["processes"] == 2
    assert abs(metrics["val_bpb"] - rows_one[-1]["val_bpb"]) < 2e-3


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(micro_run, tmp_path, monkeypatch):
    import torch

    from chatforge.errors import UserError
    from chatforge.model.checkpoint import load_model, load_training_state
    from chatforge.pretrain import train
    from chatforge.runs import open_run

    class Exploding(train.GPT):  # the 13th forward pass returns an infinite loss
        calls = 0

        def forward(self, idx, targets=None, **kw):
            out = super().forward(idx, targets, **kw)
            Exploding.calls += targets is not None and self.training
            return out * float("inf") if Exploding.calls == 13 else out

    monkeypatch.setattr(train, "GPT", Exploding)
    run = open_run(fresh_copy(micro_run, tmp_path / "nan"), overrides={"pretrain.ckpt_every": "5"})
    with pytest.raises(UserError, match=r"step 13.*last good checkpoint \(step 10\).*pretrain.lr"):
        train.pretrain(run)
    _, state = load_training_state(run.path / "base")
    assert state["step"] == 10
    assert all(torch.isfinite(p).all() for p in load_model(run.path / "base").parameters())


def test_nan_guard_is_one_line_on_the_cli(micro_run, tmp_path):
    run = fresh_copy(micro_run, tmp_path / "blowup")
    out = chatforge("pretrain", "--run", str(run), "--force", "--pretrain.steps=5", "--pretrain.lr=1e30",
                    "--pretrain.warmup_steps=0", check=False)
    assert out.returncode == 2
    errors = [ln for ln in out.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "training stopped" in errors[0] and "Traceback" not in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--model.n_head=3"], "not divisible by n_head"),
    (["--pretrain.batch_tokens=1000"], "not a multiple of batch_size x seq_len"),
    (["--pretrain.batch_tokens=-2"], "pretrain.batch_tokens must be"),
    (["--pretrain.steps=0", "--pretrain.param_data_ratio=0"], "param_data_ratio must be > 0"),
    # micro at 0.01 tokens per parameter derives 2^11 tokens per step; one micro-batch of 64 rows is 4096
    (["--pretrain.batch_tokens=-1", "--pretrain.param_data_ratio=0.01", "--pretrain.batch_size=64"],
     "smaller than one micro-batch"),
    (["--pretrain.batch_size=100000"], "larger than the training split"),
    (["--pretrain.init_from=/nonexistent"], "no checkpoint"),
    (["--pretrain.dtype=float16"], "dtype must be"),
])
def test_bad_input_fails_before_training_and_loses_nothing(micro_run, tmp_path, args, message):
    run = tmp_path / "bad"
    shutil.copytree(micro_run, run)
    before = (run / "base" / "model.safetensors").read_bytes()
    out = chatforge("pretrain", "--run", str(run), "--force", *args, check=False)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert (run / "base" / "model.safetensors").read_bytes() == before


def test_missing_shards_fail_before_training(micro_run, tmp_path):
    run = tmp_path / "noshards"
    shutil.copytree(micro_run, run)
    (run / "tokens" / "train_000.bin").unlink()
    out = chatforge("pretrain", "--run", str(run), "--force", check=False)
    assert out.returncode == 2 and "no train token shards" in out.stderr
    assert (run / "base" / "model.safetensors").exists()


def test_init_from_continues_from_a_checkpoint(micro_run, tmp_path):
    fresh = fresh_copy(micro_run, tmp_path / "fresh")
    chatforge("pretrain", "--run", str(fresh), "--force", "--pretrain.steps=3")
    cont = fresh_copy(micro_run, tmp_path / "cont")
    chatforge("pretrain", "--run", str(cont), "--force", "--pretrain.steps=3",
              f"--pretrain.init_from={micro_run / 'base'}")
    first_fresh = read_jsonl(fresh / "metrics" / "pretrain.jsonl")[0]["loss"]
    first_cont = read_jsonl(cont / "metrics" / "pretrain.jsonl")[0]["loss"]
    trained = read_jsonl(micro_run / "metrics" / "pretrain.jsonl")[-1]["loss"]
    assert first_cont < first_fresh - 1 and abs(first_cont - trained) < 0.5


def test_init_from_refuses_another_tokenizer(micro_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(micro_run, other)
    (other / "tokenizer" / "tokenizer.tiktoken").write_bytes(b"different")
    run = fresh_copy(micro_run, tmp_path / "target")
    out = chatforge("pretrain", "--run", str(run), "--force", f"--pretrain.init_from={other / 'base'}", check=False)
    assert out.returncode == 2 and "another tokenizer" in out.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_pretrain_bf16_compiled(micro_run, tmp_path):
    run = fresh_copy(micro_run, tmp_path / "gpu")
    out = chatforge("pretrain", "--run", str(run), "--force", "--pretrain.compile=true", "--pretrain.steps=40")
    assert "device cuda" in out.stdout and "bf16 autocast" in out.stdout and "compiled" in out.stdout
    rows = [r for r in read_jsonl(run / "metrics" / "pretrain.jsonl")]
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.5


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_keep_freed_memory_stops_page_faults_on_reallocation():
    # What a training step does to the allocator: free a large block and allocate it again. By default glibc
    # unmaps it and the next use faults every page in afresh (16k faults for 64 MB).
    code = """
import ctypes, resource, sys
from chatforge.model.precision import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
faults = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(2**26)
    libc.memset(block, 1, 2**26)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[1:]))
"""
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout) for mode in ("default", "keep")}
    assert faults["default"] > 10_000 and faults["keep"] < 100, faults
