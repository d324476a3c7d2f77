"""The `report` stage: a run's report card, rendered from its files alone (manifest.json, data/stats.json,
metrics/*.jsonl, eval/*.json; it loads no model and imports no torch). It writes report/report.md, a
self-contained report/index.html (inline CSS, the plots inlined; `chatforge serve` shows it at /report), the plots
as PNG files beside them and report/summary.json, and prints the checks and the summary table.

A section shows only when the files it reads exist, so a run that stopped early, or one without the optional
evaluations, still renders. The checks are the movements a working pipeline shows: bpb falls during pretraining,
5-shot beats 0-shot, the chat checkers rise after SFT, the RL task rises after RL, the arena ranks RL >= SFT > base.
"""

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from chatforge.runs import CHECKPOINTS, STAGES, Run

PASS, FAIL, NOT_MEASURED = "✓", "✗", "–"


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]


@dataclass
class Plot:
    file: str  # a PNG in report/
    alt: str


Block = str | Table | Plot  # a str is a paragraph
Section = tuple[str, list[Block]]


def read_metrics(run: Run, stage: str) -> list[dict]:
    path = run.path / "metrics" / f"{stage}.jsonl"
    return [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []


def read_eval(run: Run, kind: str) -> dict:
    path = run.path / "eval" / f"{kind}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int) or (abs(v) >= 1000 and v == int(v)):
        return f"{int(v):,}"
    return f"{v:,.1f}" if abs(v) >= 1000 else f"{round(v, 4):g}"


def ordered(stages) -> list[str]:
    """Checkpoint names least trained first; others (an arena's extra contestants) after them."""
    stages = list(dict.fromkeys(stages))
    return [s for s in CHECKPOINTS if s in stages] + [s for s in stages if s not in CHECKPOINTS]


# -- what the report shows, as plain data (report/summary.json) --

def funnel(stats: dict) -> list[dict]:
    """Documents and bytes after each data step, the corpus read first."""
    steps = stats.get("steps", {})
    first = next(iter(steps.values()), {})
    rows = [{"step": "read", "docs": stats.get("docs_in", first.get("docs_in")), "bytes": first.get("bytes_in"),
             "dropped": {}}]
    return rows + [{"step": name, "docs": st["docs_out"], "bytes": st.get("bytes_out"),
                    "dropped": st.get("dropped", {})} for name, st in steps.items()]


def tokens_per_step(run: Run) -> int | None:
    m = run.stage_info("pretrain").get("metrics", {})
    return m["tokens"] // m["steps"] if m.get("tokens") and m.get("steps") else None


def eval_rows(evals: dict) -> list[tuple[str, dict]]:
    """Every evaluation as (label, {stage: value}): the rows of the evaluation table and the summary's."""
    rows: list[tuple[str, dict]] = []
    bpb = evals.get("bpb", {}).get("bpb", {})
    if bpb:
        rows.append(("val bits/byte", {s: v for s, v in bpb.items() if s != "unigram"}))
    if fewshot := evals.get("fewshot", {}):
        rows += [(f"few-shot {k}-shot acc", {s: r[f"acc_{k}shot"] for s, r in fewshot.items()}) for k in (0, 5)]
    if regurgitation := evals.get("regurgitation", {}):
        rows += [(f"regurgitation {key}", {s: r.get(key) for s, r in regurgitation.items()})
                 for key in ("train_match", "val_match", "train_verbatim_rate", "val_verbatim_rate")]
    chat = evals.get("chat", {})
    tasks = dict.fromkeys(task for r in chat.values() for task in r["tasks"])
    for task in tasks:
        rows.append((task, {s: r["tasks"][task]["score"] for s, r in chat.items() if task in r["tasks"]}))
    if chat:
        rows.append(("chat tasks mean", {s: round(sum(t["score"] for t in r["tasks"].values()) / len(r["tasks"]), 4)
                                         for s, r in chat.items() if r["tasks"]}))
    rl = evals.get("rl", {})
    if rl:
        start = rl.get("start", "sft")
        accs = {start: rl.get("start_acc", rl.get(f"{start}_acc")), "rl": rl.get("rl_acc")}
        rows.append((f"RL task ({rl['rl_task']}) acc", {s: a for s, a in accs.items() if a is not None}))
    probe = evals.get("probe", {})
    if probe:
        rows.append(("facts known, answered", {"sft": probe["known_acc_before"], "probe": probe["known_acc_after"]}))
        rows.append(("facts unknown, refused", {"sft": probe["refusal_invented_before"],
                                                "probe": probe["refusal_invented_after"]}))
    arena = evals.get("arena", {})
    if arena:
        rows.append(("arena rating", {s: r["rating"] for s, r in arena["ratings"].items()}))
    return rows


SUMMARY_ROWS = ("val bits/byte", "few-shot 5-shot acc", "chat tasks mean", "arena rating")


def check(name: str, ok: bool | None, figures: str) -> dict:
    return {"check": name, "result": NOT_MEASURED if ok is None else PASS if ok else FAIL, "figures": figures}


def checks(s: dict, evals: dict) -> list[dict]:
    """The expected movements across the pipeline, each passed, failed or not measured, with its numbers."""
    out = []
    curve, per_step = s["pretrain"].get("val_bpb_curve", []), s["pretrain"].get("tokens_per_step")
    if len(curve) >= 2:
        (s0, first), (s1, last) = curve[0], curve[-1]
        at = (lambda step: f"{step * per_step:,} tokens") if per_step else (lambda step: f"step {step}")
        out.append(check("bpb falls during pretraining", last < first,
                         f"val bpb {first:.4f} at {at(s0)} -> {last:.4f} at {at(s1)}"))
    else:
        out.append(check("bpb falls during pretraining", None, "fewer than two val bpb evaluations"))
    fewshot = evals.get("fewshot", {})
    if fewshot:
        stage = "base" if "base" in fewshot else ordered(fewshot)[0]
        r = fewshot[stage]
        induction = (f"; a repeated random sequence: {r['repeat_nll_second']:.2f} nats a token on its second copy "
                     f"vs {r['repeat_nll_first']:.2f} on its first" if "repeat_nll_first" in r else "")
        out.append(check("5-shot beats 0-shot", r["acc_5shot"] > r["acc_0shot"],
                         f"{stage}: 0-shot {r['acc_0shot']:.3f}, 5-shot {r['acc_5shot']:.3f} (n={r['n']}, "
                         f"chance {r['chance']:.3f}){induction}"))
    else:
        out.append(check("5-shot beats 0-shot", None, "no eval/fewshot.json"))
    arena = evals.get("arena", {})
    ratings, means = arena.get("ratings", {}), s["evals"].get("chat tasks mean", {})
    if wtl := arena.get("wins", {}).get("sft vs base"):
        out.append(check("chat checkers rise after SFT", wtl[0] > wtl[2],
                         f"sft against base with a prompt on the same held-out task prompts, judged by the "
                         f"{arena['judge']}: {wtl[0]} wins, {wtl[1]} ties, {wtl[2]} losses"))
    else:
        out.append(check("chat checkers rise after SFT", None,
                         "no arena battles of sft and base" + (f" (sft mean task score {means['sft']:.3f})"
                                                               if "sft" in means else "")))
    rl = evals.get("rl", {})
    if rl.get("rl_acc") is not None:
        start = rl.get("start", "sft")
        before = rl.get("start_acc", rl.get(f"{start}_acc"))
        out.append(check("the RL task rises after RL", rl["rl_acc"] > before,
                         f"{rl['rl_task']}: {start} {before:.3f} -> rl {rl['rl_acc']:.3f} (n={rl.get('n')})"))
    else:
        out.append(check("the RL task rises after RL", None, "no eval/rl.json"))
    if {"base", "sft"} <= set(ratings):
        r = {k: v["rating"] for k, v in ratings.items()}
        ok = r["sft"] > r["base"] and r.get("rl", r["sft"]) >= r["sft"]
        out.append(check("the arena ranks RL >= SFT > base", ok, ", ".join(
            f"{k} {v['rating']:.0f} [{v['lo']:.0f}, {v['hi']:.0f}]" for k, v in
            ((k, ratings[k]) for k in ordered(ratings) if k in ("base", "sft", "rl")))))
    else:
        out.append(check("the arena ranks RL >= SFT > base", None, "no arena ratings of base and sft"))
    return out


def summarize(run: Run) -> dict:
    """Everything the report shows, as plain data (report/summary.json)."""
    names = [s.name for s in STAGES.values() if s.name != "report"]  # it cannot time itself
    m = run.manifest
    s: dict = {"run": str(run.path), "preset": run.config.preset, "git_sha": m.get("git_sha"),
               "created": m.get("created"), "machine": m.get("machine", {}), "versions": m.get("versions", {}),
               "stages": {n: {"status": run.status(n), "seconds": run.stage_info(n).get("seconds")} for n in names}}
    stats_path = run.path / "data" / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    s["data"] = {"funnel": funnel(stats), **{k: stats[k] for k in ("fact_docs", "copy_docs", "train_docs",
                                                                    "val_docs") if k in stats}} if stats else {}
    s["tokenizer"] = run.stage_info("tokenizer").get("metrics", {})
    s["pretrain"] = dict(run.stage_info("pretrain").get("metrics", {}))
    if per_step := tokens_per_step(run):
        s["pretrain"]["tokens_per_step"] = per_step
    if rows := [r for r in read_metrics(run, "pretrain") if "val_bpb" in r]:
        s["pretrain"]["val_bpb_curve"] = [[r["step"], r["val_bpb"]] for r in rows]
    s["sft"] = {k: v for k, v in run.stage_info("sft").get("metrics", {}).items() if not isinstance(v, dict | list)}
    evals = {kind: read_eval(run, kind) for kind in
             ("bpb", "fewshot", "regurgitation", "chat", "rl", "probe", "arena", "think", "lm-eval")}
    evals = {k: v for k, v in evals.items() if v}
    if fewshot := evals.get("fewshot"):  # {"figures": {stage: ...}, "examples": {family: a 5-shot prompt}}
        evals["fewshot"], s["fewshot_examples"] = fewshot.get("figures", fewshot), fewshot.get("examples", {})
    bpb = evals.get("bpb", {})
    s["bpb"], s["base_samples"] = bpb.get("bpb", {}), bpb.get("samples", [])
    chat = evals.get("chat", {})
    s["chat_scores"] = {stage: r["tasks"] for stage, r in chat.items()}
    chat_stages = ordered(chat)
    s["chat"] = chat[chat_stages[-1]]["answers"] if chat_stages else []  # the most trained model's
    s["chat_answers"] = {stage: chat[stage]["answers"] for stage in chat_stages}
    s["evals"] = {label: values for label, values in eval_rows(evals)}
    s |= {k: evals[k] for k in ("fewshot", "regurgitation", "rl", "arena", "think", "lm-eval") if k in evals}
    if "probe" in evals:
        s["probe"] = {k: v for k, v in evals["probe"].items() if k != "samples"}
    s["checks"] = checks(s, evals)
    table = summary_table(s)
    s["summary_table"] = {"head": table.head, "rows": table.rows}
    return s


def checks_table(s: dict) -> Table:
    return Table(["expected", "", "figures"], [[c["check"], c["result"], c["figures"]] for c in s["checks"]])


def summary_table(s: dict) -> Table:
    """A row per headline figure, a column per checkpoint: the table a run's write-up quotes."""
    rows = [(label, s["evals"][label]) for label in s["evals"]
            if label in SUMMARY_ROWS or label.startswith("RL task")]
    stages = ordered(st for _, values in rows for st in values)
    return Table(["", *stages], [[label, *(fmt(values.get(st)) for st in stages)] for label, values in rows])


# -- plots --

def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)


def plot_losses(run: Run, path: Path) -> bool:
    """Pretraining's train loss and val bpb against tokens seen; SFT's loss by step."""
    pre, sft = read_metrics(run, "pretrain"), [r for r in read_metrics(run, "sft") if "loss" in r]
    if not pre:
        return False
    plt = pyplot()
    per_step = tokens_per_step(run)
    x = (lambda r: r["step"] * per_step) if per_step else (lambda r: r["step"])
    fig, axes = plt.subplots(1, 2 if sft else 1, figsize=(11 if sft else 6, 4), squeeze=False)
    ax = axes[0][0]
    rows = [r for r in pre if "loss" in r]
    ax.plot([x(r) for r in rows], [r["loss"] for r in rows], label="train loss (nats/token)")
    ev = [r for r in pre if "val_bpb" in r]
    ax2 = ax.twinx()
    ax2.plot([x(r) for r in ev], [r["val_bpb"] for r in ev], "o-", color="C1", label="val bits/byte")
    ax.set(title="pretraining", xlabel="tokens seen" if per_step else "step", ylabel="train loss")
    ax2.set_ylabel("val bits/byte")
    ax.legend(loc="upper right")
    ax2.legend(loc="center right")
    if sft:
        axes[0][1].plot([r["step"] for r in sft], [r["loss"] for r in sft], color="C2")
        axes[0][1].set(title="SFT (assistant tokens)", xlabel="step", ylabel="loss")
    save(fig, path)
    return True


def plot_funnel(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(rows) + 1.2))
    ax.barh([r["step"] for r in rows], [r["docs"] for r in rows], color="C0")
    ax.invert_yaxis()
    for i, r in enumerate(rows):
        ax.text(r["docs"], i, f" {r['docs']:,}", va="center", fontsize=8)
    ax.set(title="documents after each data step", xlabel="documents", xlim=(0, 1.15 * max(r["docs"] for r in rows)))
    save(fig, path)


def plot_arena(ratings: dict, path: Path) -> None:
    plt = pyplot()
    stages = ordered(ratings)
    r = [ratings[st] for st in stages]
    fig, ax = plt.subplots(figsize=(6, 0.6 * len(stages) + 1.2))
    ax.errorbar([x["rating"] for x in r], stages, fmt="o", capsize=4,
                xerr=[[x["rating"] - x["lo"] for x in r], [x["hi"] - x["rating"] for x in r]])
    ax.invert_yaxis()
    ax.set(title="arena: Bradley-Terry ratings, 95% bootstrap intervals", xlabel="rating")
    save(fig, path)


def plot_rl(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("reward", "accuracy"):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=key)
    ax.set(title="RL rollouts (training prompts)", xlabel="step")
    ax.legend()
    save(fig, path)


# -- the sections --

def figures_table(figures: dict, skip: tuple[str, ...] = ()) -> Table:
    return Table(["figure", "value"], [[k, fmt(v)] for k, v in figures.items()
                                       if k not in skip and not isinstance(v, dict | list)])


def arena_samples(samples: list[dict]) -> list[Block]:
    """A few battles: the prompt, then each contestant's reply and the judge's value of it."""
    if not samples:
        return []
    stages = ordered(st for b in samples for st in b["answers"])
    return ["Some battles (the judge's value in brackets):", Table(["task", "prompt", *stages], [
        [b["task"], b["prompt"], *(f"{a['reply']} [{fmt(a['value'])}]" if (a := b["answers"].get(st)) else "-"
                                   for st in stages)] for b in samples])]


def sections(run: Run, s: dict, out: Path) -> list[Section]:
    """The report's sections in order, drawing their plots into `out`."""
    secs: list[Section] = [
        ("Checks", [checks_table(s), f"{PASS} moved as expected, {FAIL} did not, {NOT_MEASURED} not measured."]),
        ("Summary", [Table(**s["summary_table"]) if s["evals"] else "No evaluations yet (`chatforge eval`)."])]
    mach = s["machine"]
    hw = [f"preset {s['preset']}, git sha {s['git_sha']}, created {s['created']}"]
    if mach:
        gpus = mach.get("gpus") or []
        hw.append(f"{mach.get('cpu')}, {mach.get('cores')} cores, {fmt(mach.get('ram_gb'))} GB RAM; "
                  + (", ".join(f"{gpus.count(g)} x {g}" for g in dict.fromkeys(gpus)) if gpus else "no GPU"))
    hw.append(Table(["package", "version"], [[k, str(v)] for k, v in s["versions"].items()]))
    secs.append(("Hardware and versions", hw))
    total = sum(v["seconds"] or 0 for v in s["stages"].values())
    secs.append(("Time per stage", [Table(["stage", "status", "seconds", "share"], [
        [k, v["status"], fmt(v["seconds"]), f"{100 * v['seconds'] / total:.0f}%" if v["seconds"] and total else "-"]
        for k, v in s["stages"].items()] + [["total", "", fmt(round(total, 1)), ""]])]))
    if rows := s["data"].get("funnel"):
        plot_funnel(rows, out / "funnel.png")
        extra = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s["data"].items() if k != "funnel")
        secs.append(("Data funnel", [
            Table(["step", "documents", "bytes", "dropped"], [
                [r["step"], fmt(r["docs"]), fmt(r["bytes"]), ", ".join(f"{k} {v}" for k, v in r["dropped"].items())]
                for r in rows]),
            Plot("funnel.png", "documents after each data step"),
            f"Then the pages mixed in and the train/val split: {extra}." if extra else ""]))
    if s["tokenizer"]:
        secs.append(("Tokenizer", [figures_table(s["tokenizer"])]))
    pre: list[Block] = []
    if plot_losses(run, out / "loss.png"):
        pre.append(Plot("loss.png", "pretraining train loss and val bits/byte against tokens seen; SFT loss"))
    if s["bpb"]:
        pre.append(bpb_line(s["bpb"]) + ".")
    if s["pretrain"]:
        pre.append(figures_table(s["pretrain"]))
    if s["sft"]:
        pre += ["SFT:", figures_table(s["sft"])]
    if pre:
        secs.append(("Training: loss, throughput and MFU", pre))
    if s["evals"]:
        stages = ordered(st for values in s["evals"].values() for st in values)
        secs.append(("Evaluations", [
            Table(["evaluation", *stages], [[label, *(fmt(values.get(st)) for st in stages)]
                                            for label, values in s["evals"].items()]),
            "Chat task rows score each task's held-out split (0..1); the facts rows are probing's before (sft) and "
            "after (probe)."]))
    if families := [(st, fam, r) for st, v in s.get("fewshot", {}).items() for fam, r in v.get("tasks", {}).items()]:
        keys = list(dict.fromkeys(k for _, _, r in families for k in r))
        shots: list[Block] = [Table(["checkpoint", "family", *keys],
                                    [[st, fam, *(fmt(r.get(k)) for k in keys)] for st, fam, r in families])]
        if examples := s.get("fewshot_examples"):
            shots += ["A 5-shot prompt of each family, its answer last:",
                      Table(["family", "prompt"], [[fam, text] for fam, text in examples.items()])]
        secs.append(("Few-shot tasks", shots))
    for stage, r in s.get("regurgitation", {}).items():
        secs.append((f"Regurgitation ({stage})", [
            f"The greedy continuation of {fmt(r.get('tokens'))} tokens after a document's first "
            f"{fmt(r.get('prefix_tokens'))}, compared token by token with the document's own: training documents "
            "against held-out ones, and the fact pages by how many paragraphs mention the person.",
            Table(["continued", "token match", "verbatim rate", "n"],
                  [[f"{split} documents", fmt(r[f"{split}_match"]), fmt(r[f"{split}_verbatim_rate"]), "-"]
                   for split in ("train", "val")]
                  + [[f"fact pages, {e} mentions", fmt(m["match"]), fmt(m["verbatim_rate"]), fmt(m["n"])]
                     for e, m in r.get("facts", {}).items()])]))
    samples: list[Block] = []
    if s["base_samples"]:
        samples += ["Base model:", Table(["continuation"], [[x] for x in s["base_samples"]])]
    if answers := s["chat_answers"]:
        prompts = list(dict.fromkeys(q for a in answers.values() for q, _ in a))
        by = {st: dict(a) for st, a in answers.items()}
        samples += ["Chat models:", Table(["user", *answers], [[q, *(by[st].get(q, "-") for st in answers)]
                                                                for q in prompts])]
    if samples:
        secs.append(("Samples", samples))
    if arena := s.get("arena"):
        plot_arena(arena["ratings"], out / "arena.png")
        secs.append(("Arena", [
            f"{fmt(arena.get('battles'))} battles on {fmt(arena.get('prompts'))} prompts, judged by "
            f"{arena.get('judge')}; Bradley-Terry ratings with bootstrap intervals.",
            Plot("arena.png", "arena ratings with intervals"),
            Table(["checkpoint", "rating", "interval"], [[st, fmt(r["rating"]), f"[{fmt(r['lo'])}, {fmt(r['hi'])}]"]
                                                         for st, r in ((st, arena["ratings"][st]) for st in
                                                                       ordered(arena["ratings"]))]),
            Table(["battle", "wins", "ties", "losses"], [[pair, *map(fmt, wtl)]
                                                        for pair, wtl in arena.get("wins", {}).items()]),
            *arena_samples(arena.get("samples", []))]))
    if probe := s.get("probe"):
        blocks: list[Block] = [figures_table(probe)]
        if before := read_eval(run, "probe").get("samples", {}):
            blocks.append(Table(["prompt", "before (sft)", "after (probe)"], [
                [b["prompt"], b["reply"], a["reply"]]
                for b, a in zip(before.get("before", []), before.get("after", []), strict=False)]))
        secs.append(("Probing: what the model knows", blocks))
    rl_rows = [r for r in read_metrics(run, "rl") if "reward" in r]
    if s.get("rl") or rl_rows:
        blocks = [figures_table(s["rl"])] if s.get("rl") else []
        if rl_rows:
            plot_rl(rl_rows, out / "rl.png")
            blocks.append(Plot("rl.png", "RL reward and accuracy per step"))
        secs.append(("Reinforcement learning", blocks))
    if think := s.get("think"):
        secs.append(("Think first or answer first", [figures_table(think)]))
    if lm := s.get("lm-eval"):
        secs.append(("lm-evaluation-harness", [Table(["checkpoint", "task", "metric", "value"], [
            [st, task, k, fmt(v)] for st, r in lm.items() for task, res in r.get("results", {}).items()
            for k, v in res.items() if isinstance(v, int | float)])]))
    return secs


def bpb_line(bpb: dict) -> str:
    models = ", ".join(f"{stage} {bpb[stage]:.4f}" for stage in CHECKPOINTS if stage in bpb)
    line = f"val bits/byte: {models}; unigram baseline {bpb['unigram']:.4f}"
    if "base" in bpb:
        line += f" (the base model is {'below' if bpb['base'] < bpb['unigram'] else 'NOT below'} the baseline)"
    return line


# -- rendering --

def md_cell(t: str) -> str:
    return t.replace("|", "\\|").replace("\n", " ⏎ ")


def to_markdown(title: str, secs: list[Section]) -> str:
    lines = [f"# {title}"]
    for name, blocks in secs:
        lines += ["", f"## {name}"]
        for b in blocks:
            if isinstance(b, Table):
                lines += ["", "| " + " | ".join(map(md_cell, b.head)) + " |", "|---" * len(b.head) + "|"]
                lines += ["| " + " | ".join(map(md_cell, row)) + " |" for row in b.rows]
            elif isinstance(b, Plot):
                lines += ["", f"![{b.alt}]({b.file})"]
            elif b:
                lines += ["", b]
    return "\n".join(lines) + "\n"


CSS = """
body { margin: 0; background: #fbfaf8; color: #24221f; font: 15px/1.5 system-ui, -apple-system, sans-serif; }
main { max-width: 960px; margin: 0 auto; padding: 12px 16px 48px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #e2ded7; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #e2ded7; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f1ed; } td { white-space: pre-wrap; }
td.pass { color: #2e7d4f; font-weight: 600; } td.fail { color: #a4473d; font-weight: 600; }
img { max-width: 100%; height: auto; }
p { overflow-wrap: anywhere; }
"""


def to_html(title: str, secs: list[Section], out: Path) -> str:
    """One page with everything inline (the plots as base64 PNGs): it opens from disk, from /report, on a phone."""
    e = html.escape
    marks = {PASS: ' class="pass"', FAIL: ' class="fail"'}
    parts = [f"<h1>{e(title)}</h1>"]
    for name, blocks in secs:
        parts.append(f"<h2>{e(name)}</h2>")
        for b in blocks:
            if isinstance(b, Table):
                head = "".join(f"<th>{e(h)}</th>" for h in b.head)
                body = "".join("<tr>" + "".join(f"<td{marks.get(c, '')}>{e(c)}</td>" for c in row) + "</tr>"
                               for row in b.rows)
                parts.append(f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                             f"</table></div>")
            elif isinstance(b, Plot):
                data = base64.b64encode((out / b.file).read_bytes()).decode()
                parts.append(f'<img alt="{e(b.alt)}" src="data:image/png;base64,{data}">')
            elif b:
                parts.append(f"<p>{e(b)}</p>")
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            + "\n".join(parts) + "\n</main>\n</body>\n</html>\n")


def write_report(run: Run, s: dict) -> Path:
    out = run.path / "report"
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):  # a plot whose figures are gone goes too
        old.unlink()
    title = f"chatforge run {s['run']}"
    secs = sections(run, s, out)
    (out / "report.md").write_text(to_markdown(title, secs))
    (out / "index.html").write_text(to_html(title, secs, out))
    (out / "summary.json").write_text(json.dumps(s, indent=2, ensure_ascii=False) + "\n")
    return out / "report.md"


def print_summary(s: dict, console: Console | None = None) -> None:
    """The checks, the summary table and the bpb line; the rest is in report/."""
    console = console or Console()
    tables = [(f"run {s['run']} ({s['preset']}): checks", checks_table(s))]
    tables += [("summary", Table(**s["summary_table"]))] if s["evals"] else []
    for title, table in tables:
        t = RichTable(title=title)
        for h in table.head:
            t.add_column(h)
        for row in table.rows:
            t.add_row(*row)
        console.print(t, highlight=False)
    if s["bpb"]:
        console.print(bpb_line(s["bpb"]), highlight=False, soft_wrap=True)


def report(run: Run, resume: bool = False) -> dict:
    """The stage: print the summary and write report/ (nothing to resume: it is rewritten whole)."""
    s = summarize(run)
    print_summary(s)
    path = write_report(run, s)
    print(f"report: {path} and {path.with_name('index.html')} (`chatforge serve` shows it at /report)")
    return {"path": str(path.relative_to(run.path)), "checks": {c["check"]: c["result"] for c in s["checks"]}}
