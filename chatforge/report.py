"""The run's report: stage timings, val bits per byte against the unigram baseline, base-model
samples and chat answers, as a terminal table, report/report.md and report/loss.png."""

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chatforge.infer.chat import reply
from chatforge.infer.engine import generate
from chatforge.model.checkpoint import load_model
from chatforge.pretrain.train import SAMPLE_PROMPTS
from chatforge.runs import STAGES, Run
from chatforge.tokenizer.bpe import load_tokenizer

CHAT_PROMPTS = ["Who are you?", "What is 12 + 7?", "Hello"]


def read_metrics(run: Run, stage: str) -> list[dict]:
    path = run.path / "metrics" / f"{stage}.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def summarize(run: Run, max_tokens: int = 48) -> dict:
    out: dict = {"run": str(run.path), "preset": run.config.preset, "stages": {}}
    for stage in STAGES:
        info = run.stage_info(stage)
        out["stages"][stage] = {"status": run.status(stage), "seconds": info.get("seconds")}
    pre = run.stage_info("pretrain").get("metrics", {})
    out["val_bpb"], out["unigram_bpb"] = pre.get("val_bpb"), pre.get("unigram_bpb")
    tok = load_tokenizer(run.path / "tokenizer") if run.is_done("tokenizer") else None
    if tok and run.is_done("pretrain"):
        base = load_model(run.path / "base")
        out["base_samples"] = [
            p + tok.decode(generate(base, [tok.bos_id, *tok.encode(p)], max_tokens, 0.8, 50, seed=i))
            for i, p in enumerate(SAMPLE_PROMPTS)]
    if tok and run.is_done("sft"):
        chat = load_model(run.path / "sft")
        out["chat"] = [(q, reply(chat, tok, [{"role": "user", "content": q}], 0.0, 0, max_tokens)[0])
                       for q in CHAT_PROMPTS]
    return out


def print_summary(s: dict, console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"run {s['run']} ({s['preset']})")
    t.add_column("stage")
    t.add_column("status")
    t.add_column("wall time", justify="right")
    for stage, info in s["stages"].items():
        t.add_row(stage, info["status"], f"{info['seconds']:.1f}s" if info["seconds"] is not None else "-")
    console.print(t)
    if s.get("val_bpb") is not None:
        verdict = "below" if s["val_bpb"] < s["unigram_bpb"] else "NOT below"
        console.print(f"val bits/byte: base model {s['val_bpb']:.4f}, unigram baseline {s['unigram_bpb']:.4f} "
                      f"({verdict} the baseline)")
    for sample in s.get("base_samples", []):
        console.print(f"[bold]base>[/bold] {sample!r}", highlight=False)
    for q, a in s.get("chat", []):
        console.print(f"[bold]user>[/bold] {q}  [bold]assistant>[/bold] {a}", highlight=False)


def plot_losses(run: Run, path: Path) -> bool:
    pre, sft = read_metrics(run, "pretrain"), read_metrics(run, "sft")
    if not pre:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in pre if "loss" in r]
    axes[0].plot(steps, [r["loss"] for r in pre if "loss" in r], label="train loss (nats/token)")
    ev = [r for r in pre if "val_bpb" in r]
    ax2 = axes[0].twinx()
    ax2.plot([r["step"] for r in ev], [r["val_bpb"] for r in ev], "o-", color="C1", label="val bits/byte")
    axes[0].set(title="pretraining", xlabel="step", ylabel="train loss")
    ax2.set_ylabel("val bits/byte")
    axes[0].legend(loc="upper right")
    ax2.legend(loc="center right")
    rows = [r for r in sft if "loss" in r]
    axes[1].plot([r["step"] for r in rows], [r["loss"] for r in rows], color="C2")
    axes[1].set(title="SFT (assistant tokens)", xlabel="step", ylabel="loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(run: Run, s: dict) -> Path:
    out_dir = run.path / "report"
    out_dir.mkdir(exist_ok=True)
    lines = [f"# chatforge run `{s['run']}`", "", f"preset: {s['preset']}, git sha: {run.manifest.get('git_sha')}", "",
             "| stage | status | wall time (s) |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['seconds'] if v['seconds'] is not None else '-'} |"
              for k, v in s["stages"].items()]
    if s.get("val_bpb") is not None:
        lines += ["", f"Val bits per byte: **{s['val_bpb']}** (unigram baseline {s['unigram_bpb']})."]
    if plot_losses(run, out_dir / "loss.png"):
        lines += ["", "![losses](loss.png)"]
    if s.get("base_samples"):
        lines += ["", "## Base model samples", ""] + [f"- `{x!r}`" for x in s["base_samples"]]
    if s.get("chat"):
        lines += ["", "## Chat", ""] + [f"- **user:** {q}  \n  **assistant:** {a}" for q, a in s["chat"]]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    return path
