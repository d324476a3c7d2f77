"""Who the assistant is: asked its name, maker or nature, it answers with the configured name
(`sft.identity`) and creator (`sft.creator`). The held-out split asks in phrasings and greetings
that training never uses; the checker looks for the name in the answer."""

from chatforge.config import Config
from chatforge.tasks.common import Task, reply_text, split_rng

QUESTIONS = {
    "train": [
        "Who are you?", "who are you", "What are you?", "What is your name?", "What's your name?",
        "Tell me about yourself.", "Introduce yourself.", "Who made you?", "Who created you?", "Who built you?",
        "Are you ChatGPT?", "Are you a human?", "What should I call you?", "Hi! Who am I talking to?",
        "Hello, what are you?", "Can you tell me who you are?", "Who are you exactly?", "What kind of AI are you?",
        "Are you an AI?", "Do you have a name?", "Which model are you?", "Who trained you?",
    ],
    "test": [
        "May I know your name?", "Who am I speaking with?", "What are you called?", "Please introduce yourself.",
        "Identify yourself.", "Who is this?", "What AI model is this?", "Who developed you?",
        "Describe yourself.", "Are you a person or a program?", "Tell me your name.", "Who is your maker?",
    ],
}
GREETINGS = {
    "train": ["Hi", "Hello", "Hey", "Hi there", "Good morning", "Hello!"],
    "test": ["Good evening", "Hey there", "Greetings", "Good afternoon"],
}
ANSWERS = [
    "I'm {name}, a small language model trained from scratch by {creator}.",
    "I am {name}, an AI assistant. {creator_cap} trained me from scratch on a small corpus of news and plays.",
    "My name is {name}. I'm a small assistant model made by {creator}.",
    "I'm {name}, a language model built by {creator}. I can chat and do simple arithmetic.",
]
GREETING_ANSWERS = ["Hello! I'm {name}. How can I help you today?", "Hi! I'm {name}. What can I do for you?"]


class Identity(Task):
    name = "identity"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        name, creator = config.sft.identity, config.sft.creator
        fill = dict(name=name, creator=creator, creator_cap=creator[:1].upper() + creator[1:])
        out = []
        for i in range(n):
            if i % 5 == 4:  # one in five a greeting, answered by name too
                q, a = rng.choice(GREETINGS[split]), rng.choice(GREETING_ANSWERS)
            else:
                q, a = rng.choice(QUESTIONS[split]), rng.choice(ANSWERS)
            out.append({"messages": [{"role": "user", "content": q},
                                     {"role": "assistant", "content": a.format(**fill)}], "answer": name})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(example["answer"].lower() in reply_text(reply).lower())
