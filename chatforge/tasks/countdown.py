"""Countdown (the TV game, and TinyZero's RL task) cut to tiny's size: reach a target with two given numbers,
each used once, and +, − or ×. The answer tries an expression with the python tool, reads the result, tries
again when it misses, and ends by stating the expression that makes the target. The checker evaluates that final
expression: the numbers must be the given ones and the value the target, so any solution counts.

Two numbers, not TinyZero's three or four: with three, tiny after SFT copied the numbers into its call wrongly
and guessed the operators, and solved 2% of held-out sets. Half of the training answers miss once before they
hit: SFT shows what a retry looks like, and RL can learn when to use it. The held-out split has its own number
sets (a set belongs to one split by a hash) and its own phrasings; the practice split asks the training sets in
phrasings of its own, as the calculator's does.
"""

import ast
import itertools
import random
import re

from chatforge.config import Config
from chatforge.tasks.common import Task, hash_split, reply_text, split_rng

TEST_SHARE = 5  # one number set in 5 is held out
MISSES = (0, 1)  # how many tries a training answer misses before it hits, one drawn per answer
LOW, HIGH = 2, 99  # the given numbers
TEMPLATES = {
    "train": ["Use {nums} to make {t}.", "Make {t} from {nums}.", "With the numbers {nums}, reach {t}.",
              "Combine {nums} with +, - and * to get {t}.", "Countdown: the numbers are {nums} and the target is {t}.",
              "Get {t} using {nums}, each once.", "How do you make {t} with {nums}?", "Target {t}. Numbers: {nums}.",
              "Get to {t} from {nums}.", "Using {nums}, what gives {t}?"],
    "test": ["Using each of {nums} once, form {t}.", "Can you build {t} out of {nums}?",
             "Find a way to get {t} from {nums}.", "I have {nums}. How can I reach {t}?",
             "Numbers {nums}; goal {t}. Show the expression."],
    "practice": ["Reach {t} with {nums}.", "Numbers: {nums}. Make {t}.", "How can {nums} give {t}?",
                 "Write {t} using {nums}.", "Turn {nums} into {t}.", "Produce {t} from {nums}.",
                 "What expression of {nums} equals {t}?", "Given {nums}, hit {t}.",
                 "Is there a way to make {t} with {nums}?", "Goal: {t}. You have {nums}.",
                 "Combine {nums} so the result is {t}.", "Express {t} with {nums}."],
}
# Training and practice prompts wrap their phrasing in these: RL on five bare phrasings raised them 0.20 -> 0.49
# and unseen ones 0.21 -> 0.24, while SFT's own fell 0.47 -> 0.29: the policy keyed on the wording
OPENERS = ["", "", "", "Countdown! ", "Puzzle: ", "Quick one. ", "Here is a numbers game. ", "Try this: "]
CLOSERS = ["", "", "", " Each number once.", " You may use +, - and *.", " Check it with python.",
           " Give the expression.", " Thanks!"]
EXPRESSION = re.compile(r"([\d(][\d\s+\-*×()]*[\d)])\s*=\s*(\d+)")


def number_split(numbers: tuple[int, ...]) -> str:
    return hash_split(",".join(map(str, sorted(numbers))), TEST_SHARE)


def evaluate(expr: str) -> int | None:
    """The value of an expression of integers, + - * and brackets, or None for anything else."""
    try:
        tree = ast.parse(expr.replace("×", "*"), mode="eval")
    except SyntaxError:
        return None
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult)
    if not all(isinstance(n, allowed) for n in ast.walk(tree)):
        return None
    if any(isinstance(n, ast.Constant) and not isinstance(n.value, int) for n in ast.walk(tree)):
        return None
    return eval(compile(tree, "<countdown>", "eval"))  # only integers and + - * reach here


def expressions(numbers: tuple[int, int], rng: random.Random) -> list[tuple[str, int]]:
    """Every (expression, value) of the two numbers in either order with one operator, shuffled."""
    out = [(e, evaluate(e)) for e in dict.fromkeys(f"{x} {o} {y}" for x, y in itertools.permutations(numbers)
                                                   for o in "+-*")]
    rng.shuffle(out)
    return out


def spoken(numbers: tuple[int, ...]) -> str:
    return f"{numbers[0]} and {numbers[1]}"


class Countdown(Task):
    name = "countdown"
    rl_split = "practice"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        numbers_split = "train" if split == "practice" else split
        out = []
        while len(out) < n:
            numbers = tuple(rng.randint(LOW, HIGH) for _ in range(2))
            if number_split(numbers) != numbers_split:
                continue
            candidates = expressions(numbers, rng)
            expr, target = next((e, v) for e, v in candidates if 0 < v <= 999 and v not in numbers)
            parts = []
            wrong: dict[int, str] = {}  # a value once: 3 * 4 and 4 * 3 miss alike
            for e, v in candidates:
                if v != target:
                    wrong.setdefault(v, e)
            for value, miss in list(wrong.items())[: rng.choice(MISSES) if split == "train" else 0]:
                parts += [{"type": "python", "text": miss}, {"type": "output", "text": str(value)},
                          {"type": "text", "text": f"{value} is not {target}. "}]
            parts += [{"type": "python", "text": expr}, {"type": "output", "text": str(target)},
                      {"type": "text", "text": f"{expr} = {target}."}]
            q = rng.choice(TEMPLATES[split]).format(nums=spoken(numbers), t=target)
            if split != "test":
                q = rng.choice(OPENERS) + q + rng.choice(CLOSERS)
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": parts}],
                        "numbers": sorted(numbers), "answer": target})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        """1 when the reply's last `expression = target` uses the given numbers, each once, and is right."""
        found = EXPRESSION.findall(reply_text(reply))
        if not found:
            return 0.0
        expr, stated = found[-1]
        used = sorted(int(x) for x in re.findall(r"\d+", expr))
        return float(int(stated) == example["answer"] and used == example["numbers"]
                     and evaluate(expr) == example["answer"])

    def metrics(self, example: dict, reply: str | list[dict]) -> dict[str, float]:
        """The score, and countdown_retry_rate: replies that call python more than once."""
        calls = 0 if isinstance(reply, str) else sum(p["type"] == "python" for p in reply)
        return super().metrics(example, reply) | {"countdown_retry_rate": float(calls > 1)}
