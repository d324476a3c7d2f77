"""The `report` stage: a run summarised from its files alone (manifest.json, metrics/*.jsonl, eval/*.json; it
loads no model): stage timings, val bits per byte against the unigram baseline, base-model samples, chat
answers and chat-task scores, as a terminal summary, report/report.md, report/loss.png and
report/summary.json."""

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from chatforge.runs import CHECKPOINTS, STAGES, Run


def read_metrics(run: Run, stage: str) -> list[dict]:
    path = run.path / "metrics" / f"{stage}.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def read_eval(run: Run, kind: str) -> dict:
    path = run.path / "eval" / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summarize(run: Run) -> dict:
    """Everything the report shows, as plain data (report/summary.json)."""
    stages = [s.name for s in STAGES.values() if s.name != "report"]  # it cannot time itself
    out: dict = {"run": str(run.path), "preset": run.config.preset, "git_sha": run.manifest.get("git_sha"),
                 "stages": {s: {"status": run.status(s), "seconds": run.stage_info(s).get("seconds")} for s in stages}}
    bpb = read_eval(run, "bpb")
    out["bpb"], out["base_samples"] = bpb.get("bpb", {}), bpb.get("samples", [])
    chat = read_eval(run, "chat")
    out["chat_scores"] = {stage: r["tasks"] for stage, r in chat.items()}
    chat_stages = [s for s in CHECKPOINTS if s in chat]
    out["chat"] = chat[chat_stages[-1]]["answers"] if chat_stages else []  # the most trained model's
    return out


def bpb_line(bpb: dict) -> str:
    models = ", ".join(f"{stage} {bpb[stage]:.4f}" for stage in CHECKPOINTS if stage in bpb)
    line = f"val bits/byte: {models}; unigram baseline {bpb['unigram']:.4f}"
    if "base" in bpb:
        line += f" (the base model is {'below' if bpb['base'] < bpb['unigram'] else 'NOT below'} the baseline)"
    return line


def score_rows(scores: dict) -> list[list[str]]:
    """The chat-task table, a row per task: its name, then "score (n=N)" per evaluated stage."""
    tasks = dict.fromkeys(task for r in scores.values() for task in r)
    return [[task, *(f"{r[task]['score']:.3f} (n={r[task]['n']})" if task in r else "-" for r in scores.values())]
            for task in tasks]


def print_summary(s: dict, console: Console | None = None) -> None:
    console = console or Console()
    t = Table(title=f"run {s['run']} ({s['preset']})")
    t.add_column("stage")
    t.add_column("status")
    t.add_column("wall time", justify="right")
    for stage, info in s["stages"].items():
        t.add_row(stage, info["status"], f"{info['seconds']:.1f}s" if info["seconds"] is not None else "-")
    console.print(t)
    if s["bpb"]:
        console.print(bpb_line(s["bpb"]), highlight=False, soft_wrap=True)
    for sample in s["base_samples"]:
        console.print(f"[bold]base>[/bold] {sample!r}", highlight=False, soft_wrap=True)
    for q, a in s["chat"]:
        console.print(f"[bold]user>[/bold] {q}  [bold]assistant>[/bold] {a}", highlight=False, soft_wrap=True)
    if s["chat_scores"]:
        t = Table(title="chat tasks (held-out, 0..1)")
        t.add_column("task")
        for stage in s["chat_scores"]:
            t.add_column(stage, justify="right")
        for row in score_rows(s["chat_scores"]):
            t.add_row(*row)
        console.print(t)


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
    lines = [f"# chatforge run `{s['run']}`", "", f"preset: {s['preset']}, git sha: {s['git_sha']}", "",
             "| stage | status | wall time (s) |", "|---|---|---|"]
    lines += [f"| {k} | {v['status']} | {v['seconds'] if v['seconds'] is not None else '-'} |"
              for k, v in s["stages"].items()]
    if s["bpb"]:
        lines += ["", bpb_line(s["bpb"]) + "."]
    if plot_losses(run, out_dir / "loss.png"):
        lines += ["", "![losses](loss.png)"]
    if s["base_samples"]:
        lines += ["", "## Base model samples", ""] + [f"- `{x!r}`" for x in s["base_samples"]]
    if s["chat"]:
        lines += ["", "## Chat", ""] + [f"- **user:** {q}  \n  **assistant:** {a}" for q, a in s["chat"]]
    if s["chat_scores"]:
        stages = list(s["chat_scores"])
        lines += ["", "## Chat tasks (held-out split, score 0..1)", "", "| task | " + " | ".join(stages) + " |",
                  "|---|" + "---|" * len(stages)]
        lines += ["| " + " | ".join(row) + " |" for row in score_rows(s["chat_scores"])]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(s, indent=2) + "\n")
    return path


def report(run: Run, resume: bool = False) -> dict:
    """The stage: print the summary and write report/ (nothing to resume: it is rewritten whole)."""
    s = summarize(run)
    print_summary(s)
    path = write_report(run, s)
    print(f"report: {path}")
    return {"path": str(path.relative_to(run.path))}
