import json
import operator
import shutil

from conftest import chatforge

from chatforge.posttrain.conversations import read_jsonl, synthetic_sft_set
from chatforge.posttrain.sft import collate


def test_collate_pads_and_masks():
    x, y = collate([([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6], [0, 1])], max_len=8)
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[-1, 3, 4], [6, -1, -1]]
    x, _ = collate([(list(range(20)), [1] * 20)], max_len=8)
    assert x.shape == (1, 8)


def test_synthetic_set_uses_the_configured_identity():
    convs = synthetic_sft_set(50, 50, "Zorblax", "the lab", seed=0)
    assert len(convs) == 100
    answers = [c["messages"][-1]["content"] for c in convs]
    assert sum("Zorblax" in a for a in answers) == 50
    arith = [c for c in convs if "=" in c["messages"][-1]["content"] and "Zorblax" not in c["messages"][-1]["content"]]
    for c in arith:
        a, op, b, _, result = c["messages"][-1]["content"].rstrip(".").split()
        assert {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), int(b)) == int(result)


def test_jsonl_reader_skips_bad_lines(tmp_path):
    p = tmp_path / "chats.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n{"text": "no messages"}\n\n')
    rows, bad = read_jsonl(p)
    assert len(rows) == 1 and bad == 2


def test_sft_stage_trains_only_assistant_tokens(micro_run):
    rows = [json.loads(ln) for ln in (micro_run / "metrics" / "sft.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] > 0 and len([r for r in rows if "loss" in r]) == 20
    assert (micro_run / "sft" / "model.safetensors").exists()
    assert (micro_run / "sft_data" / "train.jsonl").exists()


def sft_with_extra(micro_run, tmp_path, extra_jsonl: str, *args: str) -> tuple:
    """Redo SFT on a copy of the micro run with a user JSONL mixed in; returns (run dir, stage metrics)."""
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(extra_jsonl)
    chatforge("sft", "--run", str(run), "--force", "--sft.n_arithmetic=0", f"--sft.extra_data={extra}", *args)
    return run, json.loads((run / "manifest.json").read_text())["stages"]["sft"]["metrics"]


def test_chat_answers_with_the_configured_identity(micro_run, tmp_path):
    run, metrics = sft_with_extra(
        micro_run, tmp_path,
        '{"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}\n'
        "this line is broken\n",
        "--sft.identity=Zorblax", "--sft.n_identity=200", "--sft.steps=150")
    assert metrics["extra"] == 1 and metrics["bad_lines"] == 1
    out = chatforge("chat", "--run", str(run), "-p", "Who are you?", "--temperature", "0")
    assert "Zorblax" in out.stdout
    assert "tokens/s" in out.stderr


def test_conversations_without_assistant_tokens_are_skipped(micro_run, tmp_path):
    run, metrics = sft_with_extra(
        micro_run, tmp_path,
        '{"messages": [{"role": "user", "content": "only a question"}]}\n'
        '{"messages": [{"role": "robot", "content": "bad role"}]}\n',
        "--sft.steps=3", "--sft.n_identity=40")
    assert metrics["extra"] == 2 and metrics["no_trained_tokens"] == 1 and metrics["bad_conversations"] == 1
    lines = sum(len((run / "sft_data" / f).read_text().splitlines()) for f in ("train.jsonl", "val.jsonl"))
    assert lines == 42  # every conversation is kept on disk; only training skips the unusable ones
