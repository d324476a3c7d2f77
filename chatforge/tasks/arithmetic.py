"""Arithmetic three ways: with the calculator, thinking first, and answering first.

arithmetic: 1-4 digit operands, + − ×, bare ("1,284 − 397") or as word problems, with or without thousands
commas, answered by a python call and "The answer is N." (after a sentence per template, tiny garbled its copy
of the output in 6 of 50 held-out replies; after this one in 2). The call copies the operands token for token: the
split regex groups digits in threes from the left, so `1284` is `12 8 4` to a tiny vocabulary while
`1,284` is `1 , 2 8 4`; Python's `1_284` keeps the tokens of `1,284`, and format(..., ",") gives the result
back with commas when the question had them. A share of the conversations says in a system message that tools
are off and works the columns out in a <think> part (+, −, × by a digit; other products from the head); the
held-out split asks each problem both ways (arith_tool_acc and arith_notool_acc: the lecture's gap).

arith_think, arith_answer: the same 2-digit problems (+ and − of two 2-digit numbers, a 2-digit number × a
digit) under the same tools-off system line, answered after digit-by-digit steps in a <think> part, or with the
answer alone. Two SFT runs, one on each, are the lecture's "models need tokens to think" experiment
(posttrain/think.py); the steps are also the cold-start format for RL.

The held-out split has its own phrasings, people and objects, and its own operand pairs: a pair {a, b} belongs
to one split by a hash of the pair (either order), so a test question is never a training question in other
words. The calculator task's practice split, where RL practises, has phrasings, people and objects of its
own on the training pairs: practice at questions worded as SFT never showed, as the test's are. The checkers
read the last number of the reply's text.
"""

import random
import re

from chatforge.config import Config
from chatforge.tasks.common import Task, hash_split, last_number, reply_text, split_rng

NO_TOOLS = "Tools are off in this conversation: answer without calling python."
NO_TOOLS_SHARE = 8  # one training conversation in 8 answers without the tool
TEST_SHARE = 5  # one operand pair in 5 is held out
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
OP_WORDS = {"+": ["+", "plus"], "-": ["-", "−", "minus"], "*": ["*", "×", "x", "times"]}
STEP_SIGN = {"+": "+", "-": "-", "*": "×"}

BARE = {
    "train": ["What is {e}?", "Compute {e}.", "{e} = ?", "How much is {e}?", "Calculate {e}", "What's {e}?",
              "Please work out {e} for me.", "Can you calculate {e}?", "solve {e}", "what is {e}",
              "I need the result of {e}.", "Tell me {e}."],
    "test": ["What do you get for {e}?", "Work out {e}.", "Please evaluate {e}", "{e} equals what?",
             "Find the value of {e}.", "Quick question: {e}?", "Could you figure out {e}?"],
    "practice": ["Help me with {e}.", "What's the answer to {e}?", "Do the math: {e}", "{e}, please.",
                 "I wonder what {e} is.", "Result of {e}?", "Give me {e}.", "How much do you get from {e}?"],
}
# (operator, question, answer sentence); {r} is the result. Subtraction problems have a >= b.
WORDS = {
    "train": [
        ("+", "{name} has {a} {obj} and gets {b} more. How many {obj} does {name} have now?",
         "{name} has {r} {obj} now."),
        ("+", "A shop sold {a} {obj} on Monday and {b} on Tuesday. How many {obj} did it sell in total?",
         "The shop sold {r} {obj} in total."),
        ("+", "{name} walked {a} meters in the morning and {b} meters in the evening. How far did {name} walk?",
         "{name} walked {r} meters."),
        ("+", "There are {a} {obj} in one box and {b} in another. How many {obj} are there altogether?",
         "There are {r} {obj} altogether."),
        ("-", "{name} had {a} {obj} and gave away {b}. How many {obj} are left?", "{name} has {r} {obj} left."),
        ("-", "A library owns {a} books and {b} of them are on loan. How many books are on the shelves?",
         "{r} books are on the shelves."),
        ("-", "{name} saved {a} dollars and spent {b} dollars. How much money is left?",
         "{name} has {r} dollars left."),
        ("-", "A tank holds {a} liters of water. {b} liters leak out. How many liters remain?",
         "{r} liters remain in the tank."),
        ("*", "{name} buys {a} packs with {b} {obj} in each. How many {obj} is that?", "That is {r} {obj}."),
        ("*", "A farm has {a} rows of trees with {b} trees in each row. How many trees are there?",
         "There are {r} trees."),
        ("*", "{name} reads {a} pages a day for {b} days. How many pages is that?", "{name} reads {r} pages."),
        ("*", "Each ticket costs {a} dollars. How much do {b} tickets cost?", "The tickets cost {r} dollars."),
        ("+", "{name} picked {a} {obj} in the morning and {b} in the afternoon. How many {obj} did {name} pick?",
         "{name} picked {r} {obj}."),
        ("+", "A club had {a} members, then {b} new members joined. How many members does the club have now?",
         "The club has {r} members now."),
        ("+", "{name} scored {a} points in the first game and {b} in the second. What is the sum of the points?",
         "The sum is {r} points."),
        ("+", "A jar holds {a} {obj}. {name} adds {b} more. How many {obj} are in the jar?",
         "The jar holds {r} {obj}."),
        ("+", "{a} people visited the museum on Friday and {b} on Saturday. How many visitors came on both days?",
         "{r} people visited."),
        ("+", "A parking lot has {a} cars and {b} more cars arrive. How many cars are there now?",
         "There are {r} cars now."),
        ("-", "{name} had {a} {obj} and lost {b} of them. How many {obj} does {name} have now?",
         "{name} has {r} {obj} now."),
        ("-", "A baker made {a} loaves and sold {b}. How many loaves are left?", "{r} loaves are left."),
        ("-", "There were {a} birds on a roof and {b} flew away. How many birds are still on the roof?",
         "{r} birds are still on the roof."),
        ("-", "A bag had {a} grams of rice and {name} used {b} grams. How much rice is in the bag now?",
         "The bag has {r} grams of rice now."),
        ("-", "What is the difference between {a} and {b}?", "The difference is {r}."),
        ("-", "{name} must read {a} pages and has read {b}. How many pages are left to read?",
         "{name} has {r} pages left to read."),
        ("*", "There are {a} {obj} in each box. How many {obj} are in {b} boxes?", "There are {r} {obj}."),
        ("*", "{name} runs {a} km every day. How far does {name} run in {b} days?", "{name} runs {r} km."),
        ("*", "A worker is paid {a} dollars per hour. How much is {b} hours of work?", "That is {r} dollars."),
        ("*", "What is {a} multiplied by {b}?", "The product is {r}."),
        ("*", "{name} packs {a} {obj} into each of {b} bags. How many {obj} are packed?",
         "{name} packs {r} {obj}."),
        ("*", "A car uses {a} liters of fuel on each trip. How much fuel do {b} trips use?",
         "{b} trips use {r} liters."),
    ],
    "test": [
        ("+", "{name} collected {a} {obj} last year and {b} {obj} this year. What is the total?",
         "{name} collected {r} {obj} in all."),
        ("+", "A train carries {a} passengers and {b} more get on at the next stop. How many passengers are on "
              "the train?", "There are {r} passengers on the train."),
        ("+", "A bowl has {a} grams of flour. {name} pours in {b} grams more. How much flour is in the bowl?",
         "The bowl has {r} grams of flour."),
        ("-", "{name} owns {a} {obj} and sells {b} of them. How many {obj} remain?", "{name} still has {r} {obj}."),
        ("-", "A road is {a} km long and a cyclist has ridden {b} km of it. How many km are still to go?",
         "{r} km are still to go."),
        ("-", "A stadium has {a} seats and {b} are taken. How many seats are free?", "{r} seats are free."),
        ("*", "A crate holds {a} {obj}. How many {obj} do {b} crates hold?", "They hold {r} {obj}."),
        ("*", "{name} earns {a} dollars a week. How much does {name} earn in {b} weeks?",
         "{name} earns {r} dollars."),
    ],
    "practice": [
        ("+", "{name} baked {a} {obj} and a friend baked {b}. How many {obj} did they bake together?",
         "They baked {r} {obj} together."),
        ("+", "A school has {a} pupils and {b} new pupils join. How many pupils does it have?",
         "The school has {r} pupils."),
        ("+", "{name} drove {a} miles on Saturday and {b} miles on Sunday. How many miles in all?",
         "{name} drove {r} miles in all."),
        ("-", "A warehouse stored {a} {obj} and shipped {b}. How many {obj} are still stored?",
         "{r} {obj} are still stored."),
        ("-", "{name} needs {a} points and has {b}. How many more points does {name} need?",
         "{name} needs {r} more points."),
        ("-", "A hall had {a} chairs and {b} were carried out. How many chairs stayed?", "{r} chairs stayed."),
        ("*", "A box has {a} {obj} and {name} orders {b} boxes. How many {obj} arrive?", "{r} {obj} arrive."),
        ("*", "A bus seats {a} people. How many people fit in {b} buses?", "{r} people fit in the buses."),
    ],
}
NAMES = {
    "train": ["Tom", "Maria", "Ali", "Sofia", "James", "Aisha", "Lucas", "Mei", "Oliver", "Fatima", "Noah", "Elena",
              "Ravi", "Grace", "Diego", "Hana", "Samuel", "Chloe", "Omar", "Ingrid", "Kofi", "Lena", "Pedro", "Yuki"],
    "test": ["Beatrice", "Tariq", "Marta", "Kenji", "Ursula", "Dmitri", "Amara", "Felix", "Priya", "Hugo", "Zara",
             "Emeka"],
    "practice": ["Nadia", "Bruno", "Ines", "Tomas", "Leila", "Viktor", "Sana", "Mateo", "Freya", "Idris"],
}
OBJECTS = {
    "train": ["apples", "stamps", "marbles", "pencils", "cookies", "shells", "cards", "stickers", "books", "coins",
              "eggs", "bottles", "candles", "buttons", "toys", "boxes"],
    "test": ["oranges", "postcards", "crayons", "muffins", "pebbles", "badges", "notebooks", "jars", "kites",
             "lemons"],
    "practice": ["pears", "tiles", "ribbons", "cupcakes", "bricks", "envelopes", "plums", "sacks"],
}


def pair_split(a: int, b: int) -> str:
    lo, hi = sorted((a, b))
    return hash_split(f"{lo},{hi}", TEST_SHARE)


def operand(rng: random.Random, digits: int) -> int:
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def fmt(n: int, commas: bool) -> str:
    return f"{n:,}" if commas else str(n)


def question(rng: random.Random, split: str, op: str, a: int, b: int, commas: bool) -> tuple[str, str]:
    """(question, answer sentence with {r} left to fill): bare or a word problem, numbers as `commas` says."""
    A, B = fmt(a, commas), fmt(b, commas)
    if rng.random() < 0.5:
        word = rng.choice(OP_WORDS[op])
        e = f"{A} {word} {B}"
        return rng.choice(BARE[split]).format(e=e), f"{e} = {{r}}."
    _, q, ans = rng.choice([t for t in WORDS[split] if t[0] == op])
    fill = dict(name=rng.choice(NAMES[split]), obj=rng.choice(OBJECTS[split]), a=A, b=B, r="{r}")
    return q.format(**fill), ans.format(**fill)


def draw_pair(rng: random.Random, split: str, op: str, digits: tuple[int, int]) -> tuple[int, int]:
    """Operands of the given digit counts whose pair is in `split` (practice uses the training pairs: only its
    phrasings are new); a >= b for subtraction."""
    while True:
        a, b = operand(rng, digits[0]), operand(rng, digits[1])
        if op == "-" and a < b:
            a, b = b, a
        if pair_split(a, b) == ("train" if split == "practice" else split):
            return a, b


def calculator_call(op: str, a: int, b: int, commas: bool) -> str:
    """The python call for a op b, its operands written as the question writes them (1,284 -> 1_284)."""
    expr = f"{fmt(a, commas).replace(',', '_')} {op} {fmt(b, commas).replace(',', '_')}"
    return f'format({expr}, ",")' if commas else expr


def operand_literals(call: str) -> list[str]:
    return re.findall(r"\d[\d_]*", call)


class Arithmetic(Task):
    name = "arithmetic"
    rl_split = "practice"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        out: list[dict] = []
        while len(out) < n:
            op = rng.choice("+-*")
            a, b = draw_pair(rng, split, op, (rng.randint(1, 4), rng.randint(1, 4)))
            commas = rng.random() < 0.5 and max(a, b) >= 1000  # only then does the question show a comma
            q, ans = question(rng, split, op, a, b, commas)
            result = OPS[op](a, b)
            r = fmt(result, commas)
            call = calculator_call(op, a, b, commas)
            with_tool = {"messages": [{"role": "user", "content": q},
                                      {"role": "assistant", "content": [
                                          {"type": "python", "text": call}, {"type": "output", "text": r},
                                          {"type": "text", "text": f"The answer is {r}."}]}],
                         "answer": result, "call": call, "metric": "arith_tool_acc"}
            text = {"type": "text", "text": ans.format(r=r)}
            worked = [{"type": "think", "text": column_steps(op, a, b)}, text] if has_steps(op, b) else [text]
            without = {"messages": [{"role": "system", "content": NO_TOOLS}, {"role": "user", "content": q},
                                    {"role": "assistant", "content": worked}],
                       "answer": result, "tools": False, "metric": "arith_notool_acc"}
            if split == "test":  # the same held-out problem with and without the tool
                out += [with_tool, without]
            else:
                out.append(without if rng.randrange(NO_TOOLS_SHARE) == 0 else with_tool)
        return out[:n]

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(last_number(reply_text(reply)) == example["answer"])

    def metrics(self, example: dict, reply: str | list[dict]) -> dict[str, float]:
        """The score, and with the tool arith_copy_acc: whether the first python call has the question's
        operands exactly as the reference call writes them."""
        out = super().metrics(example, reply)
        if "call" in example:
            calls = [] if isinstance(reply, str) else [p["text"] for p in reply if p["type"] == "python"]
            got = operand_literals(calls[0]) if calls else []
            out["arith_copy_acc"] = float(got == operand_literals(example["call"]))
        return out


def has_steps(op: str, b: int) -> bool:
    return op != "*" or b < 10


def column_steps(op: str, a: int, b: int) -> str:
    """Schoolbook steps, ones column first: a + b and a - b (a >= b) column by column, a × b for a digit b."""
    da = [int(c) for c in reversed(str(a))]
    db = [int(c) for c in reversed(str(b))]
    steps, carry = [], 0
    for i, x in enumerate(da):
        y = db[i] if i < len(db) else 0
        last = i == len(da) - 1
        if op == "-":
            top = x - carry
            terms = f"{x} - {carry} - {y}" if carry else f"{x} - {y}"
            steps.append(f"{terms}: borrow 1, {top + 10} - {y} = {top + 10 - y}" if top < y else f"{terms} = {top - y}")
            carry = int(top < y)
            continue
        s = x + y + carry if op == "+" else x * b + carry
        terms = (f"{x} + {y}" if op == "+" else f"{x} × {b}") + (f" + {carry}" if carry else "")
        carry, digit = divmod(s, 10)
        written = "" if last else f", write {digit}" + (f", carry {carry}" if carry else "")
        steps.append(f"{terms} = {s}{written}")
    return ". ".join(steps) + f". So {a} {STEP_SIGN[op]} {b} = {OPS[op](a, b)}."


class StepByStep(Task):
    """2-digit problems; think_first puts column_steps in a <think> part before the answer sentence, otherwise
    the answer sentence comes alone. Both variants draw the same problems for the same seed and are answered with
    the tools off."""

    def __init__(self, name: str, think_first: bool):
        self.name, self.think_first = name, think_first

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng("arith_steps", split, seed)  # one stream for both variants: the same problems
        out = []
        for _ in range(n):
            op = rng.choice("+-*")
            a, b = draw_pair(rng, split, op, (2, 1) if op == "*" else (2, 2))
            q, ans = question(rng, split, op, a, b, commas=False)
            result = OPS[op](a, b)
            text = {"type": "text", "text": ans.format(r=result)}
            parts = [{"type": "think", "text": column_steps(op, a, b)}, text] if self.think_first else [text]
            # answered without tools, and told so: the figure is the model's own working. Without the system line a
            # model also trained on the calculator called python here (think_first_acc 0.01 in the tiny demo)
            out.append({"messages": [{"role": "system", "content": NO_TOOLS}, {"role": "user", "content": q},
                                     {"role": "assistant", "content": parts}],
                        "answer": result, "tools": False,
                        "metric": "think_first_acc" if self.think_first else "answer_first_acc"})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(last_number(reply_text(reply)) == example["answer"])
