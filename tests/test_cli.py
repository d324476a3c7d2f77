import json
import shutil

import pytest
from conftest import chatforge

STAGE_COMMANDS = ["data", "tokenizer", "pretrain", "sft", "speedrun"]
ALL_COMMANDS = STAGE_COMMANDS + ["rl", "eval", "chat", "serve", "export", "report"]


@pytest.mark.parametrize("cmd", [None] + ALL_COMMANDS)
def test_help_everywhere(cmd):
    out = chatforge(*([cmd] if cmd else []), "--help")
    assert "usage: chatforge" in out.stdout


@pytest.mark.parametrize("cmd", ["rl", "serve", "export"])
def test_unbuilt_stages_say_so_and_fail(cmd):
    out = chatforge(cmd, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "not built yet" in lines[0]


def test_manifest_records_config_versions_and_timings(micro_run):
    m = json.loads((micro_run / "manifest.json").read_text())
    assert m["config"]["preset"] == "micro"
    assert m["versions"]["torch"] and m["versions"]["tiktoken"] and m["versions"]["python"]
    assert "git_sha" in m
    for stage in ("data", "tokenizer", "pretrain", "sft"):
        assert m["stages"][stage]["status"] == "done"
        assert m["stages"][stage]["seconds"] >= 0 and m["stages"][stage]["finished"]


def test_speedrun_report(micro_run):
    summary = json.loads((micro_run / "report" / "summary.json").read_text())
    assert len(summary["base_samples"]) == 3 and len(summary["chat"]) == 3
    assert summary["val_bpb"] < summary["unigram_bpb"]
    report = (micro_run / "report" / "report.md").read_text()
    assert "unigram baseline" in report and "loss.png" in report
    assert (micro_run / "report" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finished_stage_is_a_no_op(micro_run):
    before = json.loads((micro_run / "manifest.json").read_text())["stages"]
    out = chatforge("data", "--run", str(micro_run))
    assert "already done" in out.stdout
    assert json.loads((micro_run / "manifest.json").read_text())["stages"] == before


def test_force_redoes_a_stage_and_marks_later_stages_stale(micro_run, tmp_path):
    run = tmp_path / "forced"
    shutil.copytree(micro_run, run)
    chatforge("tokenizer", "--run", str(run), "--force")
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["tokenizer"]["status"] == "done"
    assert stages["pretrain"]["status"] == "stale" and stages["sft"]["status"] == "stale"
    out = chatforge("sft", "--run", str(run), check=False)
    assert out.returncode == 1 and "chatforge pretrain" in out.stderr


def test_missing_prerequisite_is_one_clear_error(tmp_path):
    out = chatforge("pretrain", "--preset", "micro", "--run", str(tmp_path / "empty"), check=False)
    assert out.returncode == 1
    assert "stage 'data' has not finished" in out.stderr and "Traceback" not in out.stderr


def test_bad_override_and_preset_mismatch(micro_run, tmp_path):
    out = chatforge("data", "--run", str(tmp_path / "x"), "--pretrain.stepz=3", check=False)
    assert out.returncode == 1 and "unknown field 'pretrain.stepz'" in out.stderr
    out = chatforge("data", "--run", str(micro_run), "--preset", "tiny", check=False)
    assert out.returncode == 1 and "preset=micro" in out.stderr


def test_show_config_applies_overrides(tmp_path):
    out = chatforge("pretrain", "--preset", "micro", "--run", str(tmp_path / "c"), "--show-config",
                    "--pretrain.steps", "7", "--sft.identity=Ada")
    cfg = json.loads(out.stdout)
    assert cfg["pretrain"]["steps"] == 7 and cfg["sft"]["identity"] == "Ada"
    assert not (tmp_path / "c").exists()  # looking at a config creates nothing


def test_chat_one_shot_streams_an_answer(micro_run):
    out = chatforge("chat", "--run", str(micro_run), "-p", "Who are you?", "--seed", "0", "--max-tokens", "20")
    assert out.stdout.strip()
    assert "tokens/s" in out.stderr


def test_chat_without_a_model_is_a_clear_error(tmp_path):
    out = chatforge("chat", "--run", str(tmp_path), "-p", "hi", check=False)
    assert out.returncode == 1 and "speedrun" in out.stderr


def test_eval_prints_bpb(micro_run):
    out = chatforge("eval", "--run", str(micro_run))
    results = json.loads((micro_run / "metrics" / "eval.json").read_text())
    assert results["base_bpb"] < results["unigram_bpb"] and "base_bpb" in out.stdout


def test_interactive_chat_session(micro_run):
    out = chatforge("chat", "--run", str(micro_run), "--max-tokens", "8", "--seed", "1",
                    input="hello\n\n/clear\nwho are you?\n/quit\n")
    assert out.stdout.count("assistant> ") == 2 and out.stdout.count("tokens/s, first token") == 2
