import json
import shutil
from collections import Counter

import pytest
from conftest import chatforge

from chatforge.config import make_config
from chatforge.errors import UserError
from chatforge.posttrain.conversations import mixture_conversations, read_jsonl, write_jsonl
from chatforge.posttrain.sft import collate


def test_collate_pads_and_masks():
    x, y = collate([([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6], [0, 1])], max_len=8)
    assert x.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert y.tolist() == [[-1, 3, 4], [6, -1, -1]]
    x, _ = collate([(list(range(20)), [1] * 20)], max_len=8)
    assert x.shape == (1, 8)


def test_mixture_takes_tasks_and_files_by_weight(tmp_path):
    chats = tmp_path / "chats.jsonl"
    write_jsonl(chats, [{"messages": [{"role": "user", "content": f"ping {i}"},
                                      {"role": "assistant", "content": f"pong {i}"}]} for i in range(40)])
    config = make_config("micro")
    config.sft.mixture, config.sft.identity = f"identity:60,{chats}:2.5", "Zorblax"
    convs, stats = mixture_conversations(config)
    assert stats == {"train": {"identity": 60, str(chats): 95}, "val": {"identity": 3, str(chats): 2}, "bad_lines": 0}
    identity = [c for c in convs["train"] + convs["val"] if not c["messages"][0]["content"].startswith("ping")]
    assert len(identity) == 63 and all("Zorblax" in c["messages"][-1]["content"] for c in identity)
    file_train = Counter(c["messages"][0]["content"] for c in convs["train"] if "answer" not in c)
    file_val = {c["messages"][0]["content"] for c in convs["val"] if "answer" not in c}
    assert len(file_val) == 2 and not file_val & set(file_train)  # 1/20 of the file is held out
    assert sorted(Counter(file_train.values()).items()) == [(2, 19), (3, 19)]  # 2.5 passes over the other 38
    assert mixture_conversations(config) == (convs, stats)


def test_mixture_with_a_missing_file_names_it(tmp_path):
    config = make_config("micro")
    config.sft.mixture = f"identity:10,{tmp_path / 'gone.jsonl'}:1"
    with pytest.raises(UserError, match="gone.jsonl.*no such file"):
        mixture_conversations(config)


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


def sft_with_extra(micro_run, tmp_path, extra_jsonl: str, n_identity: int, *args: str) -> tuple:
    """Redo SFT on a copy of the micro run on the identity task and a user JSONL; returns (run dir, stage metrics,
    the file's mixture name)."""
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    extra = tmp_path / "extra.jsonl"
    extra.write_text(extra_jsonl)
    chatforge("sft", "--run", str(run), "--force", f"--sft.mixture=identity:{n_identity},{extra}:1", *args)
    return run, json.loads((run / "manifest.json").read_text())["stages"]["sft"]["metrics"], str(extra)


def test_chat_answers_with_the_configured_identity(micro_run, tmp_path):
    run, metrics, extra = sft_with_extra(
        micro_run, tmp_path,
        '{"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}\n'
        "this line is broken\n",
        200, "--sft.identity=Zorblax", "--sft.steps=150")
    assert metrics["train"] == {"identity": 200, extra: 1} and metrics["bad_lines"] == 1
    out = chatforge("chat", "--run", str(run), "-p", "Who are you?", "--temperature", "0")
    assert "Zorblax" in out.stdout
    assert "tokens/s" in out.stderr


def test_conversations_without_assistant_tokens_are_skipped(micro_run, tmp_path):
    run, metrics, extra = sft_with_extra(
        micro_run, tmp_path,
        '{"messages": [{"role": "user", "content": "only a question"}]}\n'
        '{"messages": [{"role": "robot", "content": "bad role"}]}\n',
        40, "--sft.steps=3")
    assert metrics["train"] == {"identity": 40, extra: 2} and metrics["val"] == {"identity": 2, extra: 0}
    assert metrics["no_trained_tokens"] == 1 and metrics["bad_conversations"] == 1
    lines = sum(len((run / "sft_data" / f).read_text().splitlines()) for f in ("train.jsonl", "val.jsonl"))
    assert lines == 44  # every conversation is kept on disk; only training skips the unusable ones
