"""The kit every training loop shares (pretraining and SFT now; RL, the reward model and distillation next):
metrics log, LR schedule, time budget, checkpoints that resume exactly, DDP set-up, NaN guard, progress bar.

Plain functions and small dataclasses, no trainer class: each stage keeps its loop flat and explicit, readable
top to bottom, and calls these for the parts every loop would otherwise repeat.

Exact resume: a checkpoint holds the weights, the optimizer, the RNG states and a TrainState (step, training
time, data position, anything else the loop passes). A loop restores the RNG states last, just before its first
step, so set-up that draws random numbers (a fresh model's init) does not shift what the steps draw.
"""

import json
import math
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from chatforge.errors import UserError
from chatforge.model.checkpoint import load_rng_state, load_training_state, save_checkpoint
from chatforge.model.gpt import GPT
from chatforge.model.precision import pick_device


class MetricsLog:
    """metrics/STAGE.jsonl, one JSON object per step or evaluation. Rows past `resume_step` are dropped when it
    opens (all of them for a fresh start, 0), so a resumed run's file reads as if it had never stopped."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keep = []
        if resume_step and self.path.exists():
            keep = [ln for ln in self.path.read_text().splitlines() if json.loads(ln)["step"] <= resume_step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, step: int, **row) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")


def progress(step: int, steps: int, elapsed: float, max_minutes: float) -> float:
    """How far a run is, 0..1: by its steps, or by its time budget (max_minutes > 0) if that runs out first. The
    LR schedule follows it, so a run stopped by its budget has still warmed down."""
    return max(step / steps, elapsed / (60 * max_minutes) if max_minutes > 0 else 0.0)


def lr_multiplier(progress: float, step: int, warmup_steps: int, warmdown_frac: float) -> float:
    """Warmup (by steps), constant, then linear warmdown over the last `warmdown_frac` of progress."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if progress <= 1 - warmdown_frac:
        return 1.0
    return max((1 - progress) / warmdown_frac, 0.0)


def set_lr(optimizer: torch.optim.Optimizer, mult: float) -> None:
    """Every group at `mult` times its own base rate (make_optimizer records it as `base_lr`)."""
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * mult


def batch_indices(n: int, position: int, batch_size: int, seed: int) -> list[int]:
    """Items position .. position + batch_size - 1 of an endless stream over range(n) that visits every item once
    per epoch, in a fresh seeded order each epoch. A loop keeps `position` in its TrainState, so a resumed run
    takes the same batches."""
    out: list[int] = []
    while len(out) < batch_size:
        epoch, i = divmod(position + len(out), n)
        out += np.random.default_rng([seed, epoch]).permutation(n)[i : i + batch_size - len(out)].tolist()
    return out


@dataclass
class TrainState:
    """What a loop needs, besides the weights, the optimizer and the RNGs, to continue exactly where it stopped.
    Saved as the checkpoint's state.json."""
    step: int = 0
    elapsed: float = 0.0  # seconds of training, evaluations and checkpoints excluded: the time budget's clock
    position: int = 0  # items taken from the loop's data stream (batch_indices); pretraining's rows follow the step
    extra: dict = field(default_factory=dict)  # anything else the loop carries over (JSON)


@dataclass
class Checkpoint:
    """A checkpoint to resume from (the weights are read with model.checkpoint.load_model)."""
    optimizer: dict
    state: TrainState
    rng: dict | None  # None: saved without RNG states


def rng_state() -> dict:
    """The RNG states a loop may draw from: torch (CPU and every CUDA device), numpy's global, python's `random`.
    Under DDP, rank 0's, which is the one that saves."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (name, key.tolist(), pos, has_gauss, gauss), "python": random.getstate()}


def restore_rng(rng: dict | None) -> None:
    if rng is None:
        return
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    name, key, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate(rng["python"])


def save_state(ckpt_dir: Path, model: GPT, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
    """A checkpoint that resumes exactly: weights, optimizer, TrainState and the RNG states as of now. Atomic: a
    kill mid-save leaves the previous checkpoint."""
    save_checkpoint(ckpt_dir, model, optimizer, asdict(state), rng_state())


def load_state(ckpt_dir: Path) -> Checkpoint | None:
    """The training state of the checkpoint in ckpt_dir, or None if there is none to resume from."""
    opt, state = load_training_state(ckpt_dir)
    if state is None:
        return None
    return Checkpoint(opt, TrainState(**state), load_rng_state(ckpt_dir))


def check_finite(loss: float, grad_norm: float, step: int, ckpt_dir: Path, last_saved: int | None,
                 lr_knobs: str) -> None:
    """The NaN guard: stop a diverged run before its optimizer step spreads the NaN/inf into the weights, and say
    where the last good checkpoint is and which knob to turn. Re-running the stage resumes from that checkpoint."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return
    where = (f"the last good checkpoint (step {last_saved}) is in {ckpt_dir}" if last_saved is not None
             else "no checkpoint was saved yet")
    raise UserError(f"loss {loss}, gradient norm {grad_norm} at step {step}: training stopped; {where}. "
                    f"Lower {lr_knobs} and re-run")


@contextmanager
def distributed() -> Iterator[tuple[int, int, str]]:
    """(rank, world size, device) for a training loop. Under torchrun (WORLD_SIZE > 1) this process joins the
    group, NCCL on GPUs (one per local rank) and gloo on CPUs, and leaves it when the loop ends, however it ends."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device()
    if world == 1:
        yield 0, 1, device
        return
    if device == "cuda":
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    try:
        yield dist.get_rank(), world, device
    finally:
        dist.destroy_process_group()


def progress_bar(desc: str, total: int, initial: int, enabled: bool = True) -> tqdm:
    """Steps done of `total`; `enabled` is False on every DDP rank but 0."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled)
