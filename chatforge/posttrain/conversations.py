"""The SFT mixture: the conversations of the tasks and files that `sft.mixture` names (chatforge/tasks/; files
through posttrain/loaders.py), for training and for validation, written as JSONL of OpenAI-style messages."""

import json
import random
from pathlib import Path

from chatforge.config import Config
from chatforge.errors import UserError
from chatforge.posttrain.loaders import KEPT_ERRORS, load_conversations
from chatforge.tasks import TASKS, parse_mixture

VAL_SHARE = 20  # one conversation in 20 validates: a task's from its held-out split, a file's from a seeded slice


def mixture_conversations(config: Config) -> tuple[dict[str, list[dict]], dict]:
    """`sft.mixture` → ({"train": [...], "val": [...]}, stats). A task makes `weight` conversations of its training
    split and weight/20 (at least one) of its held-out split. A file gives a seeded 1/20 of its conversations to
    validation and the rest, `weight` times, to training. The stats count per source the conversations taken for
    each split, and the file records that hold no usable conversation (`bad_lines`, with the first few reasons in
    `bad_line_errors`). Every file is checked to exist before anything is read."""
    sc = config.sft
    sources = parse_mixture(sc.mixture)
    if missing := [s.name for s in sources if s.is_file and not Path(s.name).is_file()]:
        raise UserError("mixture: " + "; ".join(f"{name}: no such file" for name in missing))
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    stats: dict = {"train": {}, "val": {}, "bad_lines": 0, "bad_line_errors": []}
    for src in sources:
        if src.is_file:
            rows, loaded = load_conversations(Path(src.name))
            stats["bad_lines"] += loaded.bad
            stats["bad_line_errors"] = (stats["bad_line_errors"] + loaded.errors)[:KEPT_ERRORS]
            rng = random.Random(f"{src.name}/{sc.seed}")
            rng.shuffle(rows)
            n_val = len(rows) // VAL_SHARE
            val, rest = rows[:n_val], rows[n_val:]
            passes, fraction = divmod(src.weight, 1)
            train = rest * int(passes) + rng.sample(rest, round(fraction * len(rest)))
        else:
            task, n = TASKS[src.name], int(src.weight)
            train = task.examples("train", n, sc.seed, config)
            val = task.examples("test", max(1, n // VAL_SHARE), sc.seed, config)
        splits["train"] += train
        splits["val"] += val
        stats["train"][src.name], stats["val"][src.name] = len(train), len(val)
    return splits, stats


def write_jsonl(path: Path, rows: list[dict]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

