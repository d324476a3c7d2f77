"""Chat data as JSONL of OpenAI-style {"messages": [...]}, and the SFT mixture: the conversations of the
tasks and files that `sft.mixture` names (chatforge/tasks/), for training and for validation."""

import json
import random
from pathlib import Path

from chatforge.config import Config
from chatforge.errors import UserError
from chatforge.tasks import TASKS, parse_mixture

VAL_SHARE = 20  # one conversation in 20 validates: a task's from its held-out split, a file's from a seeded slice


def mixture_conversations(config: Config) -> tuple[dict[str, list[dict]], dict]:
    """`sft.mixture` → ({"train": [...], "val": [...]}, stats). A task makes `weight` conversations of its training
    split and weight/20 (at least one) of its held-out split. A file gives a seeded 1/20 of its conversations to
    validation and the rest, `weight` times, to training. The stats count per source the conversations taken for
    each split, and the file lines that hold no conversation (`bad_lines`)."""
    sc = config.sft
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    stats: dict = {"train": {}, "val": {}, "bad_lines": 0}
    for src in parse_mixture(sc.mixture):
        if src.is_file:
            if not Path(src.name).is_file():
                raise UserError(f"mixture entry {src.name!r}: no such file")
            rows, bad = read_jsonl(Path(src.name))
            stats["bad_lines"] += bad
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


def read_jsonl(path: Path) -> tuple[list[dict], int]:
    """Conversations with a `messages` list; returns (rows, number of bad lines skipped)."""
    rows, bad = [], 0
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            rows.append(row)
        else:
            bad += 1
    return rows, bad
