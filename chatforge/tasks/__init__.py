"""Tasks: conversations for a split and a checker of replies (common.py), shared by the SFT mixture,
evaluation and RL rewards; the registry `TASKS`; and the mixture spec that names what to train on.

To add a task: a file here with a `Task` subclass (see arithmetic.py), and its line in TASKS.
"""

import math
from dataclasses import dataclass

from chatforge.errors import UserError
from chatforge.tasks.arithmetic import Arithmetic, StepByStep
from chatforge.tasks.chat import Chat
from chatforge.tasks.common import Task
from chatforge.tasks.context import Context
from chatforge.tasks.countdown import Countdown
from chatforge.tasks.facts import Facts
from chatforge.tasks.identity import Identity
from chatforge.tasks.letters import Letters
from chatforge.tasks.safety import Safety
from chatforge.tasks.search import Search

TASKS: dict[str, Task] = {
    "identity": Identity(),
    "chat": Chat(),
    "safety": Safety(),
    "context": Context(),
    "arithmetic": Arithmetic(),
    "arith_think": StepByStep("arith_think", think_first=True),
    "arith_answer": StepByStep("arith_answer", think_first=False),
    "letters": Letters(),
    "countdown": Countdown(),
    "facts": Facts(),
    "search": Search(),
}


@dataclass
class Source:
    """One entry of a mixture: a task of TASKS, which makes `weight` training conversations, or a file of
    conversations (OpenAI messages, ShareGPT or TRL records in JSONL, JSON or parquet), each of whose training
    conversations is taken `weight` times (2: twice, 0.5: a seeded half)."""
    name: str  # the task's name, or the file's path
    weight: float
    is_file: bool


def parse_mixture(spec: str) -> list[Source]:
    """"identity:600,arithmetic:1200,data/chats.jsonl:1" → its sources; a name not in TASKS must be a .jsonl,
    .json or .parquet file of conversations (posttrain/loaders.py; whether it exists is checked when it is read)."""
    sources: list[Source] = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        name, colon, weight_text = entry.rpartition(":")
        if not colon or not name:
            raise UserError(f"mixture entry {entry!r} needs a weight: NAME:WEIGHT, e.g. arithmetic:1200")
        try:
            weight = float(weight_text)
        except ValueError:
            raise UserError(f"mixture entry {entry!r}: the weight {weight_text!r} is not a number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise UserError(f"mixture entry {entry!r}: the weight must be a number > 0")
        is_file = name not in TASKS
        if is_file and not name.endswith((".jsonl", ".json", ".parquet")):
            raise UserError(f"mixture entry {entry!r}: unknown task {name!r} (tasks: {', '.join(TASKS)}; "
                            f"a file of conversations must end in .jsonl, .json or .parquet)")
        if not is_file and weight != int(weight):
            raise UserError(f"mixture entry {entry!r}: a task's weight is a number of conversations, a whole number")
        if any(s.name == name for s in sources):
            raise UserError(f"mixture entry {entry!r}: {name!r} is named twice")
        sources.append(Source(name, weight, is_file))
    if not sources:
        raise UserError(f"the mixture {spec!r} names no task or file; e.g. identity:600,arithmetic:1200")
    return sources
