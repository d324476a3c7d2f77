"""The run directory and its manifest.json (config, versions, git sha, per-stage status and timings), and
the one table of the pipeline's stages.

Every stage reads its inputs from and writes its outputs to one run directory (docs/design.md). A finished
stage is skipped on re-run unless forced; redoing a stage marks the stages after it stale, so a pipeline
never mixes a new tokenizer with an old model.

To add a stage:
1. write its function, `fn(run, resume=False) -> dict`: it reads what earlier stages wrote under run.path,
   writes its own outputs there, and returns the metrics the manifest keeps;
2. add its Stage line to STAGES at its place in the pipeline: the subcommand and its help, the manifest's
   record (status, seconds, metrics), the prerequisite checks, stale marking and `speedrun` follow;
3. if it has settings, a dataclass for them in chatforge/config.py and a Config field of that type named as
   the Stage's section: `--SECTION.FIELD=VALUE`, `--show-config` and the manifest follow.
Options of the command line alone (like eval's KIND) go in cli.py's build_parser.
"""

import importlib
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from chatforge.config import Config, apply_overrides, from_dict, make_config, to_dict
from chatforge.errors import UserError


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline. `fn` is "module:function", imported only when the stage runs (so
    `chatforge --help` does not import torch, and this module imports no later stage); it is called as
    fn(run, resume, **options), options being its command's own (eval's kinds), and returns the metrics the
    manifest records. `section` is the Config field holding its
    settings, `needs` the stages that must have finished first."""
    name: str
    fn: str
    section: str | None
    needs: tuple[str, ...]
    help: str
    rerun: bool = False  # run whenever asked for, done or not: it only reads the run and rewrites its own files

    def load(self) -> Callable:
        module, _, name = self.fn.partition(":")
        return getattr(importlib.import_module(module), name)


# The pipeline in order: a subcommand each, `speedrun` runs the built ones in this order, and redoing one marks
# those after it stale.
STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("data", "chatforge.data.pipeline:build_sample_corpus", "data", (),
          "web crawl (WARC/WET/HTML/JSONL/parquet/text) or the sample corpus -> clean, deduplicated parquet "
          "documents (data/)"),
    Stage("tokenizer", "chatforge.tokenizer.shards:build_tokenizer_and_shards", "tokenizer", ("data",),
          "train BPE on the documents and write token shards (tokenizer/, tokens/)"),
    Stage("pretrain", "chatforge.pretrain.train:pretrain", "pretrain", ("tokenizer",),
          "pretrain the base model on the token shards (base/)"),
    Stage("sft", "chatforge.posttrain.sft:sft", "sft", ("pretrain",),
          "fine-tune the base model into a chat model (sft/)"),
    Stage("probe", "chatforge.posttrain.probe:probe", "probe", ("sft",),
          "probe what the chat model knows of the fact corpus; fine-tune it to say \"I don't know\" otherwise "
          "(probe/, eval/probe.json)"),
    Stage("rl", "chatforge.rl.grpo:rl", "rl", ("sft",),
          "GRPO on a task's verifiable rewards (or the reward model's: RLHF) from the chat model (rl/)"),
    Stage("index", "chatforge.infer.search:index_stage", None, ("data",),
          "index the documents for the search tool: BM25 over passages (index/), which chat and eval search"),
    Stage("eval", "chatforge.eval.run:evaluate", "eval", ("pretrain",),
          "evaluate the run's checkpoints: val bits per byte vs the unigram baseline, chat tasks, arena (eval/)"),
    Stage("export", "chatforge.export.run:export", None, ("pretrain",),
          "export a checkpoint as a transformers directory and a GGUF file with an Ollama Modelfile (export/)",
          rerun=True),
    Stage("report", "chatforge.report:report", None, (),
          "the run's report card: checks, stage times, data, losses, every evaluation, samples (report/report.md, "
          "report/index.html, plots, summary.json)", rerun=True),
]}
CHECKPOINTS = ("base", "sft", "probe", "rl")  # the checkpoint directories, least trained first
VERSIONED = ["chatforge", "torch", "numpy", "pyarrow", "tiktoken", "rustbpe", "safetensors"]


def write_json(path: Path, obj) -> None:
    """Atomic write: a killed process leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def machine() -> dict:
    """The hardware the run's last command ran on: CPU model, the cores this process may use, RAM, the GPUs
    (nvidia-smi's names: importing torch here would slow every command)."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        ram_gb = None
    gpus = []
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=10)
            gpus = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()] if out.returncode == 0 else []
        except (OSError, subprocess.TimeoutExpired):
            pass
    return {"cpu": cpu, "cores": cores, "ram_gb": ram_gb, "gpus": gpus}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass
class Run:
    path: Path
    config: Config
    manifest: dict

    def save(self) -> None:
        if int(os.environ.get("RANK", "0")):  # under torchrun, rank 0 alone writes the manifest
            return
        self.manifest["config"] = to_dict(self.config)
        write_json(self.path / "manifest.json", self.manifest)

    def status(self, stage: str) -> str:
        return self.manifest["stages"].get(stage, {}).get("status", "pending")

    def is_done(self, stage: str) -> bool:
        return self.status(stage) == "done"

    def stage_info(self, stage: str) -> dict:
        return self.manifest["stages"].get(stage, {})

    def require(self, stage: str) -> None:
        if not self.is_done(stage):
            raise UserError(f"stage {stage!r} has not finished in {self.path} (status: {self.status(stage)}); "
                            f"run `chatforge {stage} --run {self.path}` first")


def open_run(path: str | Path, preset: str | None = None, depth: int | None = None,
             overrides: dict[str, str] | None = None, save: bool = True) -> Run:
    """Open runs/NAME, creating it from a preset if new. Overrides are applied and, with save, kept."""
    path = Path(path)
    mpath = path / "manifest.json"
    if mpath.exists():
        manifest = json.loads(mpath.read_text())
        config = from_dict(manifest["config"])
        if (preset and preset != config.preset) or (depth and depth != config.depth):
            raise UserError(f"{path} was created with preset={config.preset} depth={config.depth}; "
                            f"use a new --run directory for another preset or depth")
    else:
        config = make_config(preset or "tiny", depth)
        manifest = {"name": path.name, "created": now(), "stages": {}}
    config = apply_overrides(config, overrides or {})
    manifest["versions"] = versions()
    manifest["machine"] = machine()
    manifest["git_sha"] = git_sha()
    run = Run(path, config, manifest)
    if save:
        path.mkdir(parents=True, exist_ok=True)
        run.save()
    return run


def needed(stage: str) -> list[str]:
    """The stages `stage` needs, directly or through another, earliest first."""
    out: list[str] = []
    for need in STAGES[stage].needs:
        out += [s for s in [*needed(need), need] if s not in out]
    return out


def run_stage(run: Run, stage: str, force: bool = False, **options) -> dict:
    """Run STAGES[stage]'s fn(run, resume, **options) -> metrics, recording status and timings once the stages
    it needs have finished; a done stage is a no-op unless forced (or a rerun stage). `resume` is true when the
    last attempt was interrupted, so fn can pick up its checkpoint."""
    spec = STAGES[stage]
    for need in needed(stage):
        run.require(need)
    force = force or spec.rerun
    if run.is_done(stage) and not force:
        print(f"{stage}: already done in {run.path} (use --force to redo)")
        return run.stage_info(stage).get("metrics", {})
    fn = spec.load()
    resume = not force and run.status(stage) in ("running", "failed")
    # The config this stage ran with: later overrides change the run's config, not what made this stage.
    info = {"status": "running", "started": now(), "config": to_dict(run.config)}
    run.manifest["stages"][stage] = info
    run.save()
    t0 = time.time()
    try:
        metrics = fn(run, resume, **options) or {}
    except BaseException as e:
        info.update(status="failed", error=f"{type(e).__name__}: {e}", seconds=round(time.time() - t0, 2))
        run.save()
        raise
    info.update(status="done", finished=now(), seconds=round(time.time() - t0, 2), metrics=metrics)
    names = list(STAGES)
    for later in names[names.index(stage) + 1:]:
        if run.is_done(later):
            run.manifest["stages"][later]["status"] = "stale"
    run.save()
    return metrics


def checkpoints(run_path: str | Path) -> list[str]:
    """The checkpoints a run has, least trained first."""
    return [s for s in CHECKPOINTS if (Path(run_path) / s / "model.safetensors").exists()]


def checkpoint_stage(run_path: str | Path, stage: str | None = None) -> str:
    """The checkpoint `chat`, `generate`, `eval` and `export` use: `stage` (base, sft, probe or rl) if given, else the
    most trained one present."""
    present = checkpoints(run_path)
    if stage is None and present:
        return present[-1]
    if stage in present:
        return stage
    if not present:
        raise UserError(f"no checkpoint in {run_path}; run `chatforge speedrun --run {run_path}` first")
    raise UserError(f"no {stage} checkpoint in {run_path}; it has: {', '.join(present)}")
