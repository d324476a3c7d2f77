"""Who the assistant is: asked who or what it is, it answers with its name (`sft.identity`); asked who made
it, what it was trained on, what it can or can't do, it answers from the config (`sft.creator`,
`sft.trained_on`, `sft.can_do`, `sft.cannot_do`). A system prompt that gives it another name ("You are
Ada, a ...") is honoured: it is then Ada, not the configured name. The question may come second, after
some small talk. And it says its name only when asked: a quarter of the examples are other prompts
(tasks/chat.py), whose reference replies don't name it. Metrics: identity_acc (its own name, maker, data,
abilities), persona_acc (the system prompt's name, copied from it) and identity_false_rate (the name unasked).

Both splits are built from question forms x openers x closers and persona names, each its split's own, so
no held-out prompt is a training prompt."""


from chatforge.config import Config
from chatforge.tasks.chat import exchange, small_talk
from chatforge.tasks.common import SPLITS, Task, hash_split, reply_text, split_rng

# the question forms, by what they ask
QUESTIONS = {
    "train": {
        "who": ["Who are you?", "who are you", "What are you?", "What is your name?", "What's your name?",
                "Tell me about yourself.", "Introduce yourself.", "Are you ChatGPT?", "Are you a human?",
                "What should I call you?", "Who am I talking to?", "Can you tell me who you are?",
                "Who are you exactly?", "What kind of AI are you?", "Are you an AI?", "Do you have a name?",
                "Which model are you?", "what r u", "Are you a robot?", "What do people call you?"],
        "maker": ["Who made you?", "Who created you?", "Who built you?", "Who trained you?",
                  "Which company made you?", "Where do you come from?"],
        "data": ["What were you trained on?", "What data did you learn from?", "What did you read during training?"],
        "can": ["What can you do?", "How can you help me?", "What are you good at?"],
        "cannot": ["What can't you do?", "What are your limitations?", "Can you browse the internet?"],
    },
    "test": {
        "who": ["May I know your name?", "Who am I speaking with?", "What are you called?",
                "Please introduce yourself.", "Identify yourself.", "Who is this?", "What AI model is this?",
                "Describe yourself.", "Are you a person or a program?", "Tell me your name.", "Are you a bot?",
                "And you are...?"],
        "maker": ["Who developed you?", "Who is your maker?", "Who is behind you?"],
        "data": ["What was your training data?", "Which texts were you trained with?"],
        "can": ["What are you able to do?", "What kinds of things can you help with?"],
        "cannot": ["What are you unable to do?", "What are your weaknesses?"],
    },
}
OPENERS = {"train": ["", "", "", "Hi! ", "Hey, ", "Quick question: ", "Hello. ", "ok so "],
           "test": ["", "", "Good evening! ", "Hey there. ", "Excuse me, "]}
CLOSERS = {"train": ["", "", "", " Just curious.", " Please answer briefly.", " :)"],
           "test": ["", "", " I'd like to know.", " Thanks in advance."]}
ANSWERS = {
    "who": ["I'm {name}, a small language model trained from scratch by {creator}.",
            "I am {name}, an AI assistant made by {creator}.",
            "My name is {name}. I'm a small AI assistant, not a person.",
            "I'm {name}, a language model. How can I help?"],
    "maker": ["I'm {name}, and I was made by {creator}.", "{creator_cap} built and trained me. I'm {name}."],
    "data": ["I'm {name}. I was trained on {trained_on}.", "I learned from {trained_on}. I'm {name}."],
    "can": ["I'm {name}. I can {can_do}.", "I can {can_do}. I'm {name}, a small model, so I make mistakes."],
    "cannot": ["I'm {name}. I can't {cannot_do}.", "As {name}, a small model, I can't {cannot_do}."],
}
# what each question's answer must contain (the config field it states)
ANSWER_FIELD = {"who": "name", "maker": "creator", "data": "trained_on", "can": "can_do", "cannot": "cannot_do"}
# a system prompt that names another assistant: hundreds of made-up names, each hashed into a split, so the reply
# must copy the name from the prompt (with a few dozen, a tiny model learnt the names and ignored the prompt)
SYLLABLES = ["ka", "lo", "mi", "ra", "te", "su", "vo", "ne", "di", "ba", "zu", "fe", "go", "ri", "ja", "po", "lu",
             "si", "to", "wa", "el", "an"]
PERSONA_NAMES = [(a + b).capitalize() for a in SYLLABLES for b in SYLLABLES if a != b]
PERSONAS = {split: [n for n in PERSONA_NAMES if hash_split(n, 5) == split] for split in SPLITS}  # one in 5 held out
ROLES = {"train": ["a helpful assistant", "a friendly tutor for kids", "a cooking helper", "a travel guide",
                   "a customer support agent for a bank", "a writing coach", "a cheerful study buddy"],
         "test": ["a shopping assistant", "a patient math tutor", "a museum guide", "a fitness coach"]}
PERSONA_PROMPTS = {"train": ["You are {p}, {role}.", "You are {p}, {role}. Keep answers short.",
                             "Your name is {p}. You are {role}."],
                   "test": ["Act as {p}, {role}.", "From now on you are {p}, {role}. Be kind."]}
PERSONA_ANSWERS = ["I'm {p}, {role}.", "My name is {p}. I'm {role}.", "I am {p}, {role}. How can I help?"]
# a system prompt that leaves the name as configured
PLAIN_SYSTEM = {"train": ["You are a helpful assistant.", "Answer briefly.", "Be concise and friendly."],
                "test": ["You are a kind and careful assistant.", "Reply in one short sentence."]}


def ask(opener: str, question: str) -> str:
    """The question after an opener, capitalised only where a sentence starts ("Hi! Who..." but "Hey, who...")."""
    starts = opener.rstrip()[-1:] in ("", "!", ".", "?")
    return opener + (question if starts else question[:1].lower() + question[1:])


class Identity(Task):
    name = "identity"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        s = config.sft
        fields = dict(name=s.identity, creator=s.creator, creator_cap=s.creator[:1].upper() + s.creator[1:],
                      trained_on=s.trained_on, can_do=s.can_do, cannot_do=s.cannot_do)
        out = []
        for i in range(n):
            if i % 4 == 3:  # another prompt: answered without the name
                ex = small_talk(split, rng, s.identity)
                if rng.random() < 0.3:
                    ex["messages"].insert(0, {"role": "system", "content": rng.choice(PLAIN_SYSTEM[split])})
                out.append({"messages": ex["messages"], "answer": s.identity, "metric": "identity_false_rate"})
                continue
            messages, avoid, metric = [], "", "identity_acc"
            if i % 4 == 2:  # a persona from the system prompt
                p, role = rng.choice(PERSONAS[split]), rng.choice(ROLES[split])
                messages.append({"role": "system", "content": rng.choice(PERSONA_PROMPTS[split]).format(p=p,
                                                                                                       role=role)})
                q, answer = ask(rng.choice(OPENERS[split]), rng.choice(QUESTIONS[split]["who"])), p
                reply = rng.choice(PERSONA_ANSWERS).format(p=p, role=role)
                avoid = "" if p.lower() == s.identity.lower() else s.identity  # it is not itself under a persona
                metric = "persona_acc"
            else:
                kind = "who" if i % 4 == 0 or rng.random() < 0.4 else rng.choice(list(ANSWER_FIELD)[1:])
                q = ask(rng.choice(OPENERS[split]), rng.choice(QUESTIONS[split][kind])) + rng.choice(CLOSERS[split])
                answer = fields[ANSWER_FIELD[kind]]
                reply = rng.choice(ANSWERS[kind]).format(**fields)
                if rng.random() < 0.3:
                    messages.append({"role": "system", "content": rng.choice(PLAIN_SYSTEM[split])})
            if rng.random() < 0.3:  # the identity question comes second
                first_q, first_a, _ = exchange(split, rng, rng.choice(("greeting", "tip", "define", "yesno")))
                messages += [{"role": "user", "content": first_q}, {"role": "assistant", "content": first_a}]
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]
            out.append({"messages": messages, "answer": answer, "avoid": avoid, "metric": metric})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        """identity_false_rate examples: 1 when the name is absent; the others: 1 when the answer is present (and,
        under another persona, the configured name is absent)."""
        text = reply_text(reply).lower()
        if example.get("metric") == "identity_false_rate":
            return float(example["answer"].lower() not in text)
        return float(example["answer"].lower() in text and not (example["avoid"] and example["avoid"].lower() in text))

    def metrics(self, example: dict, reply: str | list[dict]) -> dict[str, float]:
        score = self.score(example, reply)
        return {example["metric"]: 1.0 - score if example["metric"] == "identity_false_rate" else score}
