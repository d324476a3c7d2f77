import json
import shutil
import subprocess
import sys

import pytest
from conftest import chatforge

from chatforge.cli import main, parse_args
from chatforge.errors import UserError
from chatforge.runs import STAGES

STAGE_COMMANDS = ["data", "tokenizer", "pretrain", "sft", "eval", "report", "speedrun"]
ALL_COMMANDS = STAGE_COMMANDS + ["probe", "rl", "index", "export", "chat", "generate", "serve", "import", "reward",
                                 "dpo", "distill"]


@pytest.mark.parametrize("cmd", [None] + ALL_COMMANDS)
def test_help_everywhere(cmd):
    out = chatforge(*([cmd] if cmd else []), "--help")
    assert "usage: chatforge" in out.stdout


def test_manifest_records_config_versions_and_timings(micro_run):
    m = json.loads((micro_run / "manifest.json").read_text())
    assert m["config"]["preset"] == "micro"
    assert m["versions"]["torch"] and m["versions"]["tiktoken"] and m["versions"]["python"]
    assert "git_sha" in m
    for stage in STAGES:
        assert m["stages"][stage]["status"] == "done"
        assert m["stages"][stage]["seconds"] >= 0 and m["stages"][stage]["finished"]
    figures = m["stages"]["eval"]["metrics"]
    assert figures["bpb"]["base"] < figures["bpb"]["unigram"] and set(figures["chat"]) == {"sft", "probe", "rl"}


def test_speedrun_report(micro_run):
    summary = json.loads((micro_run / "report" / "summary.json").read_text())
    assert len(summary["base_samples"]) == 3 and len(summary["chat"]) == 3
    assert summary["bpb"]["base"] < summary["bpb"]["unigram"] and "sft" in summary["bpb"]
    assert set(summary["chat_scores"]["sft"]) == {"identity", "arithmetic"}
    assert list(summary["stages"]) == [s for s in STAGES if s != "report"]
    report = (micro_run / "report" / "report.md").read_text()
    assert "unigram baseline" in report and "loss.png" in report and "| identity |" in report
    assert (micro_run / "report" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_and_help_load_no_model():
    code = ("import sys; import chatforge.report; from chatforge.cli import build_parser; build_parser(); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('chatforge.pretrain', "
            "'chatforge.model', 'chatforge.infer'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_speedrun_again_skips_what_is_done_and_rewrites_the_report(micro_run, tmp_path):
    run = tmp_path / "again"
    shutil.copytree(micro_run, run)
    out = chatforge("speedrun", "--run", str(run))
    for stage in ("data", "tokenizer", "pretrain", "sft", "probe", "rl", "index", "eval"):
        assert f"{stage}: already done" in out.stdout
    last = out.stdout.splitlines()[-2:]  # how to chat in the terminal, then in the browser
    assert "unigram baseline" in out.stdout and "chatforge chat --run" in last[0] and "chatforge serve" in last[1]
    assert "speedrun estimate" in out.stdout.splitlines()[0]


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
    assert all(stages[s]["status"] == "stale" for s in ("pretrain", "sft", "eval", "report"))
    out = chatforge("sft", "--run", str(run), check=False)
    assert out.returncode == 2 and "chatforge pretrain" in out.stderr


def one_line_error(out: subprocess.CompletedProcess, command: str) -> str:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"chatforge {command}: error: "), out.stderr
    return lines[0]


def test_missing_prerequisite_is_one_clear_error(tmp_path):
    out = chatforge("pretrain", "--preset", "micro", "--run", str(tmp_path / "empty"), check=False)
    assert "stage 'data' has not finished" in one_line_error(out, "pretrain")  # the first stage missing


def test_bad_override_preset_and_input_file_are_one_line_errors(micro_run, tmp_path):
    out = chatforge("data", "--run", str(tmp_path / "x"), "--pretrain.stepz=3", check=False)
    assert "unknown field 'pretrain.stepz'" in one_line_error(out, "data")
    out = chatforge("data", "--run", str(tmp_path / "x"), "--pretrain.steps=many", check=False)
    assert "bad value for pretrain.steps" in one_line_error(out, "data")
    out = chatforge("data", "--run", str(micro_run), "--preset", "tiny", check=False)
    assert "preset=micro" in one_line_error(out, "data")
    out = chatforge("data", "--run", str(tmp_path / "x"), "--preset", "huge", check=False)
    assert out.returncode == 2 and "invalid choice: 'huge'" in out.stderr  # argparse's own usage error
    out = chatforge("generate", "--run", str(micro_run), "--file", str(tmp_path / "nope.txt"), check=False)
    assert "no prompt file" in one_line_error(out, "generate")
    out = chatforge("data", "--preset", "micro", "--run", str(tmp_path / "y"), "--input", str(tmp_path / "nope.warc"),
                    check=False)
    assert "does not exist" in one_line_error(out, "data")
    assert not (tmp_path / "x").exists()


def test_a_bug_keeps_its_traceback_and_a_user_error_is_one_line(monkeypatch, tmp_path, capsys):
    import chatforge.report

    def crash(run, resume=False):
        raise KeyError("a bug")

    monkeypatch.setattr(chatforge.report, "report", crash)
    with pytest.raises(KeyError, match="a bug"):
        main(["report", "--run", str(tmp_path / "r")])
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["stages"]["report"]["status"] == "failed"

    def refuse(run, resume=False):
        raise UserError("nothing to report")

    monkeypatch.setattr(chatforge.report, "report", refuse)
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--run", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "chatforge report: error: nothing to report\n"

    def interrupted(run, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(chatforge.report, "report", interrupted)
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--run", str(tmp_path / "r")])
    assert exit_.value.code == 130 and "re-run the same command to resume" in capsys.readouterr().err


def test_every_stage_of_the_table_is_a_command():
    for name, stage in STAGES.items():
        args, _ = parse_args([name, "--run", "r"])
        assert args.command == name and stage.load()
    args, _ = parse_args(["tokenizer", "show", "--run", "r", "some text"])  # options before the text
    assert (args.action, args.text, args.run) == ("show", "some text", "r")
    args, overrides = parse_args(["eval", "--run", "r", "bpb", "chat", "--stage", "sft", "--json",
                                  "--eval.bpb_tokens=9"])
    assert (args.kinds, args.stage, args.json, overrides) == (["bpb", "chat"], "sft", True, {"eval.bpb_tokens": "9"})


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
    assert "speedrun" in one_line_error(out, "chat")


def test_stage_picks_the_checkpoint(micro_run, tmp_path):
    run = tmp_path / "no_rl"
    shutil.copytree(micro_run, run)
    shutil.rmtree(run / "rl")
    out = chatforge("generate", "The", "--run", str(run), "--stage", "rl", check=False)
    assert "no rl checkpoint" in one_line_error(out, "generate") and "it has: base, sft, probe" in out.stderr
    out = chatforge("eval", "chat", "--run", str(micro_run), "--stage", "base", check=False)
    assert "needs a chat model" in one_line_error(out, "eval")
    out = chatforge("eval", "nonsense", "--run", str(micro_run), check=False)
    assert "unknown evaluation" in one_line_error(out, "eval")


def test_eval_writes_each_kind_and_prints_json_last(micro_run, tmp_path):
    run = tmp_path / "eval"
    shutil.copytree(micro_run, run)
    (run / "eval" / "bpb.json").unlink()
    out = chatforge("eval", "bpb", "--run", str(run), "--stage", "base", "--json")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(figures) == ["bpb"] and set(figures["bpb"]) == {"unigram", "base"}
    assert figures["bpb"]["base"] < figures["bpb"]["unigram"]
    written = json.loads((run / "eval" / "bpb.json").read_text())
    assert written["bpb"] == figures["bpb"] and len(written["samples"]) == 3
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["eval"]["status"] == "done" and stages["eval"]["metrics"] == figures
    assert stages["report"]["status"] == "stale"
    out = chatforge("eval", "--run", str(run), "--json")  # nothing named: done, so its figures again
    assert "already done" in out.stdout and json.loads(out.stdout.strip().splitlines()[-1]) == figures


def test_interactive_chat_session(micro_run):
    out = chatforge("chat", "--run", str(micro_run), "--max-tokens", "8", "--seed", "1",
                    input="hello\n\n/clear\nwho are you?\n/quit\n")
    assert out.stdout.count("assistant> ") == 2 and out.stdout.count("tokens/s, first token") == 2
