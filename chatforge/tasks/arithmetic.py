"""Small sums, differences and products, answered as "a op b = result.". The held-out split uses
its own phrasings and its own operand pairs: a pair {a, b} belongs to one split by a hash of the pair
(either order), so a test question is never a training question in other words. The checker reads
the last number of the answer."""

import zlib

from chatforge.config import Config
from chatforge.tasks.common import Task, last_number, reply_text, split_rng

TEMPLATES = {
    "train": ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?", "How much is {a} {op} {b}?",
              "Calculate {a} {op} {b}"],
    "test": ["What do you get for {a} {op} {b}?", "Work out {a} {op} {b}.", "Please evaluate {a} {op} {b}",
             "{a} {op} {b} equals what?"],
}
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
TEST_SHARE = 5  # one operand pair in 5 is held out


def pair_split(a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return "test" if zlib.crc32(f"{lo},{hi}".encode()) % TEST_SHARE == 0 else "train"


class Arithmetic(Task):
    name = "arithmetic"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        out = []
        while len(out) < n:
            op = rng.choice("+-*")
            top = 12 if op == "*" else 99
            a, b = rng.randint(0, top), rng.randint(0, top)
            if pair_split(a, b) != split:
                continue
            result = OPS[op](a, b)
            q = rng.choice(TEMPLATES[split]).format(a=a, op=op, b=b)
            out.append({"messages": [{"role": "user", "content": q},
                                     {"role": "assistant", "content": f"{a} {op} {b} = {result}."}],
                        "answer": result})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(last_number(reply_text(reply)) == example["answer"])
