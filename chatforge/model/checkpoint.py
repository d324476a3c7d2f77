"""Checkpoints: model.safetensors + config.json (the model); optimizer.pt, state.json and rng.pt (to resume,
chatforge/train.py).

Written to a temporary directory and swapped in with renames, so a kill mid-save leaves the
previous checkpoint intact."""

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from chatforge.model.gpt import GPT, GPTConfig


def save_checkpoint(out_dir: Path, model: GPT, optimizer: torch.optim.Optimizer | None = None,
                    state: dict | None = None, rng: dict | None = None) -> None:
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, tmp / "model.safetensors")
    (tmp / "config.json").write_text(json.dumps(dataclasses.asdict(model.cfg), indent=2) + "\n")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if state is not None:
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    if rng is not None:
        torch.save(rng, tmp / "rng.pt")
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def remove_checkpoint(ckpt_dir: Path) -> None:
    ckpt_dir = Path(ckpt_dir)
    for d in (ckpt_dir, ckpt_dir.with_name(ckpt_dir.name + ".tmp"), ckpt_dir.with_name(ckpt_dir.name + ".old")):
        shutil.rmtree(d, ignore_errors=True)


def _resolve(ckpt_dir: Path) -> Path | None:
    ckpt_dir = Path(ckpt_dir)
    for d in (ckpt_dir, ckpt_dir.with_name(ckpt_dir.name + ".old")):  # .old: killed between a save's renames
        if (d / "model.safetensors").exists():
            return d
    return None


def load_model(ckpt_dir: Path, device: str = "cpu") -> GPT:
    found = _resolve(ckpt_dir)
    if found is None:
        raise FileNotFoundError(f"no checkpoint at {ckpt_dir}")
    ckpt_dir = found
    cfg = GPTConfig(**json.loads((ckpt_dir / "config.json").read_text()))
    model = GPT(cfg)
    model.load_state_dict(load_file(ckpt_dir / "model.safetensors", device="cpu"))
    return model.to(device)


def load_training_state(ckpt_dir: Path) -> tuple[dict | None, dict | None]:
    """(optimizer state dict, state.json) of a checkpoint, or (None, None) if it has none."""
    ckpt_dir = _resolve(ckpt_dir)
    if ckpt_dir is None or not (ckpt_dir / "state.json").exists():
        return None, None
    opt = torch.load(ckpt_dir / "optimizer.pt", map_location="cpu", weights_only=True)
    return opt, json.loads((ckpt_dir / "state.json").read_text())


def load_rng_state(ckpt_dir: Path) -> dict | None:
    """The RNG states a checkpoint was saved with, or None if it has none."""
    ckpt_dir = _resolve(ckpt_dir)
    if ckpt_dir is None or not (ckpt_dir / "rng.pt").exists():
        return None
    return torch.load(ckpt_dir / "rng.pt", map_location="cpu", weights_only=True)
