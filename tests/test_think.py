import json
import shutil
import subprocess
import sys
from pathlib import Path

from chatforge.posttrain.think import VARIANTS, variant_run
from chatforge.runs import Run, open_run

ROOT = Path(__file__).resolve().parents[1]


def test_variant_runs_share_the_base_and_train_on_their_own_task(micro_run, tmp_path):
    run = Run(tmp_path, open_run(micro_run, save=False).config, {"stages": {}})
    for name in ("base", "tokenizer"):
        (tmp_path / name).symlink_to(micro_run / name)
    for variant, task in VARIANTS.items():
        vrun = variant_run(run, variant, 30, 7)
        assert vrun.path == tmp_path / "think" / variant
        assert (vrun.path / "base").resolve() == (micro_run / "base").resolve()
        assert (vrun.path / "tokenizer" / "tokenizer.tiktoken").exists()
        assert vrun.config.sft.mixture == f"{task}:30" and vrun.config.sft.steps == 7
        assert run.config.sft.mixture != vrun.config.sft.mixture  # the run's own config is untouched
        assert variant_run(run, variant, 30, 7).path == vrun.path  # again: the links are reused


def test_bench_trains_both_variants_on_the_same_problems_and_writes_think_json(micro_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(micro_run, run, ignore=shutil.ignore_patterns("think"))
    proc = subprocess.run([sys.executable, "bench/think.py", "--run", str(run), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert json.loads((run / "eval" / "think.json").read_text()) == result
    assert {"think_first_acc", "answer_first_acc", "n", "steps"} <= set(result)
    assert 0 <= result["think_first_acc"] <= 1 and 0 <= result["answer_first_acc"] <= 1
    assert (result["n"], result["steps"]) == (16, 20)
    prompts = {}
    for variant in VARIANTS:
        rows = [json.loads(line) for line in (run / "think" / variant / "sft_data" / "train.jsonl").open()]
        prompts[variant] = [r["messages"][0]["content"] for r in rows]
        assert (run / "think" / variant / "sft" / "model.safetensors").exists()
    assert prompts["think_first"] == prompts["answer_first"] and len(prompts["think_first"]) == 40
