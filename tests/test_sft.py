import json
import shutil
from collections import Counter

import pytest
import torch
from conftest import chatforge

from chatforge.config import GPTConfig, make_config
from chatforge.errors import UserError
from chatforge.model.gpt import GPT
from chatforge.posttrain.conversations import mixture_conversations, write_jsonl
from chatforge.posttrain.sft import collate, pack, packed_loss


def test_pack_fills_rows_with_whole_conversations():
    lengths = [60, 50, 40, 30, 20, 10, 65, 5]
    rows = pack(lengths, capacity=65, seed=0)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))  # each conversation once, whole
    assert all(sum(lengths[i] for i in row) <= 65 for row in rows)
    assert len(rows) == 5 and sum(lengths) / (65 * len(rows)) > 0.85  # 280 tokens in 5 rows of 65: no padding rows
    assert pack(lengths, 65, seed=0) == rows  # a function of the data and the seed: resume takes the same rows


def test_collate_concatenates_a_row_and_masks_its_boundaries():
    a, b = ([0, 11, 12, 13], [0, 0, 1, 1]), ([0, 21, 22], [0, 0, 1])  # 0 is <|endoftext|>: each starts with it
    x, y, doc = collate([[a, b], [b]], max_len=8)
    assert x.tolist() == [[0, 11, 12, 13, 0, 21, 0, 0], [0, 21, 0, 0, 0, 0, 0, 0]]
    # targets: the assistant tokens of each conversation; never the next conversation's start, never the padding
    assert y.tolist() == [[-1, 12, 13, -1, -1, 22, -1, -1], [-1, 22, -1, -1, -1, -1, -1, -1]]
    assert doc.tolist() == [[0, 0, 0, 0, 1, 1, 2, 2], [0, 0, 2, 2, 2, 2, 2, 2]]  # padding: a conversation of its own


def test_packed_loss_is_each_conversation_alone():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, seq_len=16, n_layer=2, n_embd=32, n_head=2, n_kv_head=1))
    for p in model.parameters():  # not the identity blocks of a fresh model: attention must matter
        torch.nn.init.normal_(p, std=0.3)
    a = ([0, *range(1, 7)], [0, 0, 0, 1, 1, 1, 1])
    b = ([0, *range(10, 15)], [0, 0, 1, 1, 1, 1])
    x, y, doc = collate([[a, b]], max_len=16)
    packed = packed_loss(model, x, y, doc, reduction="none")
    alone = [model(*collate([[c]], max_len=16)[:2], reduction="none") for c in (a, b)]
    expected = torch.cat([alone[0][: len(a[0]) - 1], torch.zeros(1), alone[1][: len(b[0]) - 1]])
    n = len(a[0]) + len(b[0]) - 1
    assert torch.allclose(packed[:n], expected, atol=1e-5)  # as if alone: attention stays inside each conversation
    causal_only = model(x, y, reduction="none")
    assert not torch.allclose(causal_only[:n], expected, atol=1e-5)  # b's positions see a without the mask
    with pytest.raises(AssertionError):
        collate([[a, b, b]], max_len=8)


def test_mixture_takes_tasks_and_files_by_weight(tmp_path):
    chats = tmp_path / "chats.jsonl"
    write_jsonl(chats, [{"messages": [{"role": "user", "content": f"ping {i}"},
                                      {"role": "assistant", "content": f"pong {i}"}]} for i in range(40)])
    config = make_config("micro")
    config.sft.mixture, config.sft.identity = f"identity:60,{chats}:2.5", "Zorblax"
    convs, stats = mixture_conversations(config)
    assert stats == {"train": {"identity": 60, str(chats): 95}, "val": {"identity": 3, str(chats): 2}, "bad_lines": 0,
                     "bad_line_errors": []}
    identity = [c for c in convs["train"] + convs["val"] if not c["messages"][0]["content"].startswith("ping")]
    named = [c for c in identity if "Zorblax" in str(c["messages"][-1]["content"])]
    assert len(identity) == 63 and len(named) > 63 // 2  # the others answer to a system prompt's persona
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
    out = chatforge("chat", "--run", str(run), "--stage", "sft", "-p", "Who are you?", "--temperature", "0")
    assert "Zorblax" in out.stdout
    assert "tokens/s" in out.stderr


def test_unusable_conversations_are_counted_and_skipped(micro_run, tmp_path):
    long = {"messages": [{"role": "user", "content": "talk"}, {"role": "assistant", "content": "word " * 200}]}
    run, metrics, extra = sft_with_extra(  # the long one is longer than a row of micro's 128 tokens: dropped, not cut
        micro_run, tmp_path,
        '{"messages": [{"role": "user", "content": "only a question"}]}\n'
        '{"messages": [{"role": "robot", "content": "bad role"}]}\n' + json.dumps(long) + "\n",
        40, "--sft.steps=3")
    assert metrics["train"] == {"identity": 40, extra: 2} and metrics["val"] == {"identity": 2, extra: 0}
    assert metrics["bad_lines"] == 1 and metrics["bad_line_errors"] == [f"{extra}:2: message 1: unknown role 'robot'"]
    assert metrics["no_trained_tokens"] == 1 and metrics["too_long"] >= 1
    lines = sum(len((run / "sft_data" / f).read_text().splitlines()) for f in ("train.jsonl", "val.jsonl"))
    assert lines == 44  # every conversation read is kept on disk; only training skips the unusable ones


def test_a_mixture_that_cannot_be_read_stops_before_training(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run)
    weights = (run / "sft" / "model.safetensors").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "bot", "content": "hi"}]}\n')
    for mixture, message in ((f"identity:10,{tmp_path / 'gone.jsonl'}:1", "gone.jsonl: no such file"),
                             (f"identity:10,{bad}:1", "bad.jsonl: no usable conversation in 1 records")):
        out = chatforge("sft", "--run", str(run), "--force", f"--sft.mixture={mixture}", check=False)
        assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr
    assert (run / "sft" / "model.safetensors").read_bytes() == weights  # the checkpoint was not touched


def test_sft_reports_packing_and_token_counts(micro_run):
    metrics = json.loads((micro_run / "manifest.json").read_text())["stages"]["sft"]["metrics"]
    assert 0.5 < metrics["row_fill"] <= 1 and metrics["rows"] > 0
    assert 0 < metrics["trained_tokens"] < metrics["tokens"] and metrics["tok_s"] > 0
    rows = [json.loads(ln) for ln in (micro_run / "metrics" / "sft.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert evals and all(0 <= evals[-1][k] <= 1 for k in ("identity_false_rate", "unfinished_rate"))


def test_chat_system_prompt_is_the_first_turn(monkeypatch, capsys):
    import chatforge.infer.chat as chat
    from chatforge.infer.engine import GenStats, SamplingParams

    seen = []
    monkeypatch.setattr(chat, "answer", lambda engine, messages, params, out=None: (seen.append(messages), GenStats()))
    chat.chat_loop(None, "Who are you?", "You are Zed.", SamplingParams())
    chat.chat_loop(None, "Who are you?", None, SamplingParams())
    assert seen == [[{"role": "system", "content": "You are Zed."}, {"role": "user", "content": "Who are you?"}],
                    [{"role": "user", "content": "Who are you?"}]]


def test_chat_with_a_system_prompt_from_the_command_line(micro_run):
    out = chatforge("chat", "--run", str(micro_run), "--system", "You are Zed.", "-p", "Who are you?",
                    "--temperature", "0", "--max-tokens", "8")
    assert "tokens/s" in out.stderr
