"""The run directory and its manifest.json: config, versions, git sha, per-stage status and timings.

Every stage reads its inputs from and writes its outputs to one run directory (DESIGN.md §3).
A finished stage is skipped on re-run unless forced; redoing a stage marks the stages after it
stale, so a pipeline never mixes a new tokenizer with an old model.
"""

import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from chatforge.config import Config, apply_overrides, from_dict, make_config, to_dict

STAGES = ["data", "tokenizer", "pretrain", "sft"]
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


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class RunError(Exception):
    """A run directory that cannot do what was asked (a missing stage, a mismatched preset)."""


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
            raise RunError(f"stage {stage!r} has not finished in {self.path} (status: {self.status(stage)}); "
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
            raise RunError(f"{path} was created with preset={config.preset} depth={config.depth}; "
                           f"use a new --run directory for another preset or depth")
    else:
        config = make_config(preset or "tiny", depth)
        manifest = {"name": path.name, "created": now(), "stages": {}}
    config = apply_overrides(config, overrides or {})
    manifest["versions"] = versions()
    manifest["git_sha"] = git_sha()
    run = Run(path, config, manifest)
    if save:
        path.mkdir(parents=True, exist_ok=True)
        run.save()
    return run


def run_stage(run: Run, stage: str, fn, force: bool = False) -> dict:
    """Run fn(run, resume) -> metrics as `stage`, recording status and timings; a done stage is a
    no-op. `resume` is true when the last attempt was interrupted, so fn can pick up its checkpoint."""
    if run.is_done(stage) and not force:
        print(f"{stage}: already done in {run.path} (use --force to redo)")
        return run.stage_info(stage).get("metrics", {})
    resume = not force and run.status(stage) in ("running", "failed")
    # The config this stage ran with: later overrides change the run's config, not what made this stage.
    info = {"status": "running", "started": now(), "config": to_dict(run.config)}
    run.manifest["stages"][stage] = info
    run.save()
    t0 = time.time()
    try:
        metrics = fn(run, resume) or {}
    except BaseException as e:
        info.update(status="failed", error=f"{type(e).__name__}: {e}", seconds=round(time.time() - t0, 2))
        run.save()
        raise
    info.update(status="done", finished=now(), seconds=round(time.time() - t0, 2), metrics=metrics)
    if stage in STAGES:
        for later in STAGES[STAGES.index(stage) + 1:]:
            if run.is_done(later):
                run.manifest["stages"][later]["status"] = "stale"
    run.save()
    return metrics
