"""The report card: sections present exactly when their files are, the checks computed from the numbers,
index.html self-contained and parseable, and /report served by `chatforge serve`. Hand-written run directories
(a manifest, metrics and eval files written here) and the micro run."""

import base64
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from fastapi.testclient import TestClient
from rich.console import Console

from chatforge.infer.tools import Tools
from chatforge.report import FAIL, NOT_MEASURED, PASS, print_summary, report, summarize
from chatforge.runs import open_run
from chatforge.serve.app import create_app

PNG = b"\x89PNG\r\n\x1a\n"
OPTIONAL = {"Data funnel", "Tokenizer", "Training: loss, throughput and MFU", "Evaluations", "Few-shot tasks",
            "Samples", "Arena", "Probing: what the model knows", "Reinforcement learning",
            "Think first or answer first", "lm-evaluation-harness", "Regurgitation (base)"}


class Page(HTMLParser):
    """The headings and the images' sources of a page; raises on a tag closed that was not open."""

    def __init__(self, text: str):
        super().__init__()
        self.open: list[str] = []
        self.h2: list[str] = []
        self.images: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open.pop() == tag

    def handle_data(self, data):
        if self.open and self.open[-1] == "h2":
            self.h2.append(data)


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(obj, list):
        path.write_text("".join(json.dumps(r) + "\n" for r in obj))
    else:
        path.write_text(json.dumps(obj))


def make_run(path: Path, good: bool = True, files: tuple[str, ...] | None = None) -> Path:
    """A finished run's files with numbers that move the expected way (good) or the other way; `files` keeps only
    those named (all by default)."""
    run = open_run(path, preset="micro")
    up, down = (1, 0) if good else (0, 1)
    run.manifest["stages"] = {
        "data": {"status": "done", "seconds": 2.0},
        "tokenizer": {"status": "done", "seconds": 1.0, "metrics": {"vocab_size": 512, "train_bytes_per_token": 2.5,
                                                                    "val_bytes_per_token": 2.6}},
        "pretrain": {"status": "done", "seconds": 30.0, "metrics": {"steps": 4, "tokens": 4096, "tok_s": 1000,
                                                                    "mfu": 0.2, "params": 1000, "val_bpb": 2.0}},
        "sft": {"status": "done", "seconds": 10.0, "metrics": {"steps": 3, "val_loss": 1.5}},
    }
    run.save()
    bpb = [3.0, 2.0] if good else [2.0, 3.0]
    out = {
        "data/stats.json": {"docs_in": 100, "docs_out": 80, "fact_docs": 5, "steps": {
            "language": {"docs_in": 100, "docs_out": 90, "bytes_in": 10_000, "bytes_out": 9_000,
                         "dropped": {"language": 10}},
            "dedup": {"docs_in": 90, "docs_out": 80, "bytes_in": 9_000, "bytes_out": 8_000,
                      "dropped": {"exact_duplicate": 10}}}},
        "metrics/pretrain.jsonl": [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "val_bpb": bpb[0]},
                                   {"step": 3, "loss": 3.5}, {"step": 4, "loss": 3.0, "val_bpb": bpb[1]}],
        "metrics/sft.jsonl": [{"step": s, "loss": 2.0 / s} for s in (1, 2, 3)],
        "metrics/rl.jsonl": [{"step": s, "reward": 0.1 * s, "accuracy": 0.1 * s} for s in (1, 2)],
        "eval/bpb.json": {"bpb": {"unigram": 3.5, "base": 2.0, "sft": 2.2}, "samples": ["The cat\nsat"]},
        "eval/fewshot.json": {"figures": {"base": {"acc_0shot": 0.3, "acc_5shot": 0.3 + 0.2 * (up - down), "n": 50,
                                                   "chance": 0.25, "repeat_nll_first": 8.0,
                                                   "repeat_nll_second": 8.0 - 6 * up,
                                                   "tasks": {"position": {"acc_0shot": 0.3, "acc_5shot": 0.4}}}},
                              "examples": {"position": "Q: one two\nA: one"}},
        "eval/regurgitation.json": {"base": {"train_match": 0.4, "val_match": 0.1, "train_verbatim_rate": 0.2,
                                             "val_verbatim_rate": 0.0, "n": 20, "prefix_tokens": 32, "tokens": 32,
                                             "facts": {"1": {"match": 0.1, "verbatim_rate": 0.0, "n": 5}}}},
        "eval/chat.json": {
            stage: {"tasks": {"identity": {"n": 10, "score": score}, "arithmetic": {"n": 10, "score": score}},
                    "answers": [["Who are you?", f"I am {stage} | a model"]]}
            for stage, score in (("sft", 0.5), ("rl", 0.4))},
        "eval/rl.json": {"rl_task": "arithmetic", "n": 40, "start": "sft", "start_acc": 0.3,
                         "rl_acc": 0.3 + 0.2 * (up - down), "rl_gain_pts": 20.0 * (up - down)},
        "eval/probe.json": {"n": 40, "known_acc_before": 0.5, "known_acc_after": 0.45, "refusal_invented_before": 0.0,
                            "refusal_invented_after": 0.6, "samples": {
                                "before": [{"prompt": "Who is X?", "reply": "A"}],
                                "after": [{"prompt": "Who is X?", "reply": "B"}]}},
        "eval/arena.json": {"judge": "verifier", "battles": 300, "prompts": 60, "rank": ["rl", "sft", "base"],
                            "wins": {"sft vs base": [40, 10, 10] if good else [10, 10, 40]},
                            "samples": [{"task": "identity", "prompt": "Who?", "answers": {
                                "base": {"reply": "", "value": None}, "sft": {"reply": "me", "value": 1.0}}}],
                            "ratings": {"base": {"rating": 900 + 200 * down, "lo": 850, "hi": 950},
                                        "sft": {"rating": 1000, "lo": 960, "hi": 1040},
                                        "rl": {"rating": 1100 - 200 * down, "lo": 1050, "hi": 1150}}},
        "eval/think.json": {"think_first_acc": 0.4, "answer_first_acc": 0.1, "n": 40, "steps": 100},
        "eval/lm-eval.json": {"base": {"results": {"hellaswag": {"alias": "hellaswag", "acc,none": 0.26}}}},
    }
    for name, obj in out.items():
        if files is None or name in files:
            write(path / name, obj)
    return path


def render(path: Path) -> tuple[dict, str, Page]:
    report(open_run(path, save=False))
    out = path / "report"
    return json.loads((out / "summary.json").read_text()), (out / "report.md").read_text(), \
        Page((out / "index.html").read_text())


def results(summary: dict) -> list[str]:
    return [c["result"] for c in summary["checks"]]


def test_every_section_is_there_when_its_file_is(tmp_path):
    summary, md, page = render(make_run(tmp_path / "full"))
    assert set(page.h2) == {"Checks", "Summary", "Hardware and versions", "Time per stage"} | OPTIONAL
    assert all(f"## {name}" in md for name in page.h2)
    plots = ["funnel.png", "loss.png", "arena.png", "rl.png"]
    for name in plots:
        png = (tmp_path / "full" / "report" / name).read_bytes()
        assert png[:8] == PNG and f"]({name})" in md
        assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in page.images  # inline: no file needed
    assert len(page.images) == len(plots)
    assert "| few-shot 5-shot acc | 0.5 | - | - |" in md and "| base | hellaswag | acc,none | 0.26 |" in md
    assert "| position | Q: one two ⏎ A: one |" in md and "| fact pages, 1 mentions | 0.1 | 0 | 5 |" in md
    assert "| sft vs base | 40 | 10 | 10 |" in md and "| identity | Who? |  [-] | me [1] |" in md
    assert "| I am sft \\| a model |" in md and "The cat ⏎ sat" in md  # table cells stay one line
    assert summary["machine"]["cores"] >= 1 and summary["data"]["funnel"][-1] == {
        "step": "dedup", "docs": 80, "bytes": 8000, "dropped": {"exact_duplicate": 10}}
    assert summary["evals"]["regurgitation train_match"] == {"base": 0.4}
    assert summary["pretrain"]["val_bpb_curve"] == [[2, 3.0], [4, 2.0]]
    assert summary["pretrain"]["tokens_per_step"] == 1024
    assert summary["summary_table"]["head"] == ["", "base", "sft", "rl"]
    assert summary["summary_table"]["rows"][-1] == ["arena rating", "900", "1,000", "1,100"]


def test_a_run_without_files_renders_the_sections_it_can(tmp_path):
    open_run(tmp_path / "bare", preset="micro")
    summary, md, page = render(tmp_path / "bare")
    assert set(page.h2) == {"Checks", "Summary", "Hardware and versions", "Time per stage"}
    assert page.images == [] and not list((tmp_path / "bare" / "report").glob("*.png"))
    assert results(summary) == [NOT_MEASURED] * 5
    summary, md, page = render(make_run(tmp_path / "some", files=("eval/bpb.json", "eval/chat.json")))
    assert set(page.h2) == {"Checks", "Summary", "Hardware and versions", "Time per stage", "Evaluations", "Samples",
                            "Tokenizer", "Training: loss, throughput and MFU"}  # these two from the manifest
    assert "few-shot" not in md and "| arena rating |" not in md and "regurgitation" not in md


def test_checks_follow_the_numbers(tmp_path):
    assert results(summarize(open_run(make_run(tmp_path / "good"), save=False))) == [PASS] * 5
    bad = summarize(open_run(make_run(tmp_path / "bad", good=False), save=False))
    assert results(bad) == [FAIL] * 5
    assert [c["figures"] for c in bad["checks"]][:2] == [
        "val bpb 2.0000 at 2,048 tokens -> 3.0000 at 4,096 tokens",
        "base: 0-shot 0.300, 5-shot 0.100 (n=50, chance 0.250); a repeated random sequence: 8.00 nats a token on "
        "its second copy vs 8.00 on its first"]
    assert bad["checks"][2]["figures"].endswith("judged by the verifier: 10 wins, 10 ties, 40 losses")
    # no arena: SFT's check is not measured, the rest stands
    make_run(tmp_path / "arena", files=("eval/chat.json",))
    checks = summarize(open_run(tmp_path / "arena", save=False))["checks"]
    assert checks[2] == {"check": "chat checkers rise after SFT", "result": NOT_MEASURED,
                         "figures": "no arena battles of sft and base (sft mean task score 0.500)"}
    # rl.json as written before RL could start from probe: sft_acc
    write(tmp_path / "arena" / "eval" / "rl.json", {"rl_task": "arithmetic", "n": 10, "sft_acc": 0.5, "rl_acc": 0.4})
    checks = summarize(open_run(tmp_path / "arena", save=False))["checks"]
    assert checks[3] == {"check": "the RL task rises after RL", "result": FAIL,
                         "figures": "arithmetic: sft 0.500 -> rl 0.400 (n=10)"}


def test_terminal_summary_is_the_checks_and_the_summary_table(tmp_path):
    summary = summarize(open_run(make_run(tmp_path / "r"), save=False))
    console = Console(record=True, width=200)
    print_summary(summary, console)
    text = console.export_text()
    assert "bpb falls during pretraining" in text and "unigram baseline" in text
    assert "arena rating" in text and "RL task (arithmetic) acc" in text
    assert "The cat" not in text and "Who are you?" not in text  # samples stay in the report
    assert len(text.splitlines()) < 40


def test_manifest_records_the_machine(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"  # what nvidia-smi --query-gpu=name --format=csv,noheader prints
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3'\necho 'NVIDIA H100 80GB HBM3'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    m = json.loads((open_run(tmp_path / "r", preset="micro").path / "manifest.json").read_text())["machine"]
    assert m["gpus"] == ["NVIDIA H100 80GB HBM3"] * 2 and m["cores"] >= 1 and m["ram_gb"] > 0 and m["cpu"]
    summary, md, page = render(tmp_path / "r")
    assert "RAM; 2 x NVIDIA H100 80GB HBM3" in md


def test_rendering_imports_no_torch(tmp_path):
    path = make_run(tmp_path / "r")
    code = (f"import sys; from chatforge.report import report; from chatforge.runs import open_run; "
            f"report(open_run({str(path)!r}, save=False)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False")


def test_micro_run_report(micro_run):
    summary = json.loads((micro_run / "report" / "summary.json").read_text())
    assert [c["check"] for c in summary["checks"]][0] == "bpb falls during pretraining"
    assert summary["machine"]["cpu"] and summary["tokenizer"]["vocab_size"] == 512
    page = Page((micro_run / "report" / "index.html").read_text())
    assert {"Checks", "Summary", "Data funnel", "Evaluations", "Samples"} <= set(page.h2)
    assert len(page.images) == len(list((micro_run / "report").glob("*.png"))) >= 3


def test_serve_shows_the_report_and_says_when_there_is_none(micro_run, tmp_path):
    with TestClient(create_app(micro_run, api_key="k", tools=Tools())) as client:
        page = client.get("/report")  # no key: like the chat page
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text == (micro_run / "report" / "index.html").read_text()
        assert 'href="report"' in client.get("/").text  # the chat page links to it
    bare = tmp_path / "no-report"
    shutil.copytree(micro_run, bare, ignore=shutil.ignore_patterns("report", "export", "optimizer.pt"))
    with TestClient(create_app(bare, tools=Tools())) as client:
        page = client.get("/report")
        assert page.status_code == 404 and "chatforge report --run" in page.text


def test_a_file_gone_takes_its_section_and_plot_with_it(tmp_path):
    path = make_run(tmp_path / "r")
    render(path)
    (path / "eval" / "arena.json").unlink()
    summary, md, page = render(path)
    assert "Arena" not in page.h2 and "arena" not in summary and not (path / "report" / "arena.png").exists()
