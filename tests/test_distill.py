import json
import shutil

from chatforge.rl.distill import distill
from chatforge.runs import open_run


def test_distill_micro_to_micro(micro_run, tmp_path):
    student = tmp_path / "student"
    shutil.copytree(micro_run, student, ignore=shutil.ignore_patterns("rl", "eval", "export", "report"))
    run = open_run(student, overrides={"distill.teacher": str(micro_run), "distill.examples": "6",
                                       "distill.samples": "2", "distill.only_correct": "false", "sft.steps": "2"})
    before = (student / "sft" / "model.safetensors").read_bytes()
    metrics = distill(run)
    rows = [json.loads(ln) for ln in (student / "distill_data" / "train.jsonl").read_text().splitlines()]
    assert metrics["sampled"] == 12 and metrics["kept"] == len(rows) == 12
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    manifest = json.loads((student / "manifest.json").read_text())
    assert manifest["stages"]["sft"]["status"] == "done"
    assert str(student / "distill_data" / "train.jsonl") in manifest["config"]["sft"]["mixture"]
    assert (student / "sft" / "model.safetensors").read_bytes() != before
