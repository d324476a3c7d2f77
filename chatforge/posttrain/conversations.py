"""Chat data as JSONL of OpenAI-style {"messages": [...]}, and the synthetic sets the SFT stage
makes on its own: who the assistant is (from config), and simple arithmetic worked step by step."""

import json
import random
from pathlib import Path

IDENTITY_QUESTIONS = [
    "Who are you?", "who are you", "What are you?", "What is your name?", "What's your name?",
    "Tell me about yourself.", "Introduce yourself.", "Who made you?", "Who created you?", "Who built you?",
    "Are you ChatGPT?", "Are you a human?", "What should I call you?", "Hi! Who am I talking to?",
    "Hello, what are you?", "Can you tell me who you are?", "Who are you exactly?", "What kind of AI are you?",
    "Are you an AI?", "Do you have a name?", "Which model are you?", "Who trained you?",
]
IDENTITY_ANSWERS = [
    "I'm {name}, a small language model trained from scratch by {creator}.",
    "I am {name}, an AI assistant. {creator_cap} trained me from scratch on a small corpus of news and plays.",
    "My name is {name}. I'm a small assistant model made by {creator}.",
    "I'm {name}, a language model built by {creator}. I can chat and do simple arithmetic.",
]
GREETINGS = ["Hi", "Hello", "Hey", "Hi there", "Good morning", "Hello!"]
GREETING_ANSWERS = ["Hello! I'm {name}. How can I help you today?", "Hi! I'm {name}. What can I do for you?"]
ARITHMETIC_TEMPLATES = ["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?",
                        "How much is {a} {op} {b}?", "Calculate {a} {op} {b}"]


def identity_conversations(n: int, name: str, creator: str, rng: random.Random) -> list[dict]:
    fill = dict(name=name, creator=creator, creator_cap=creator[:1].upper() + creator[1:])
    convs = []
    for i in range(n):
        if i % 5 == 4:
            q, a = rng.choice(GREETINGS), rng.choice(GREETING_ANSWERS)
        else:
            q, a = rng.choice(IDENTITY_QUESTIONS), rng.choice(IDENTITY_ANSWERS)
        convs.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a.format(**fill)}]})
    return convs


def arithmetic_conversations(n: int, rng: random.Random) -> list[dict]:
    convs = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b = (rng.randint(0, 99), rng.randint(0, 99)) if op != "*" else (rng.randint(0, 12), rng.randint(0, 12))
        result = {"+": a + b, "-": a - b, "*": a * b}[op]
        q = rng.choice(ARITHMETIC_TEMPLATES).format(a=a, op=op, b=b)
        convs.append({"messages": [{"role": "user", "content": q},
                                   {"role": "assistant", "content": f"{a} {op} {b} = {result}."}]})
    return convs


def synthetic_sft_set(n_identity: int, n_arithmetic: int, name: str, creator: str, seed: int) -> list[dict]:
    rng = random.Random(seed)
    convs = identity_conversations(n_identity, name, creator, rng) + arithmetic_conversations(n_arithmetic, rng)
    rng.shuffle(convs)
    return convs


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
