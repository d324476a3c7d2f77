"""Small talk and everyday requests: greetings, "how are you", thanks and goodbyes, short tips, the meaning
of common words and yes/no questions, alone or as the last turn of a short conversation. They teach the
model that most prompts get an answer, not its identity sentence.

The checker judges the kind of reply, not its truth, except for yes/no: a greeting is answered with a
greeting, thanks with "welcome", a goodbye with "bye", a tip names its topic, a definition names its word
and says "means", a yes/no question gets the right first word; and none of them says the assistant's name.
The held-out split has its own phrasings, topics, words and questions."""

import random

from chatforge.config import Config
from chatforge.tasks.common import Task, reply_text, split_rng

GREETINGS = {
    "train": ["Hi", "Hello", "Hey", "Hi there", "Hello!", "Hey!", "Hiya", "Good morning", "Morning!", "Yo",
              "Hi :)", "Hello there", "Heya", "Hi!!", "hello", "hey there!"],
    "test": ["Good evening", "Greetings", "Good afternoon", "Howdy", "Hey hey", "Hello friend", "Hi friend",
             "Evening!", "Sup"],
}
GREETING_REPLIES = ["Hello! How can I help you today?", "Hi! What can I do for you?",
                    "Hey! What would you like to talk about?", "Hello! What's on your mind?"]
GREETING_WORDS = ("hello", "hi", "hey", "good morning", "good evening", "good afternoon", "greetings")
HOW_ARE_YOU = {
    "train": ["How are you?", "How are you doing?", "How's it going?", "How are you today?", "You doing ok?",
              "how r u", "How have you been?"],
    "test": ["How do you feel today?", "Are you doing well?", "What's up with you?", "How is your day going?",
             "All good with you?"],
}
HOW_REPLIES = ["I'm doing well, thanks for asking! How can I help?", "I'm good, thank you! What can I do for you?",
               "Doing great, thanks! What would you like to talk about?"]
THANKS = {
    "train": ["Thanks!", "Thank you", "Thanks a lot", "thx", "Thank you so much!", "Great, thanks.", "Cheers!",
              "Thanks for the help"],
    "test": ["Many thanks", "I appreciate it", "Much appreciated!", "Thanks a bunch", "ty", "That helped, thank you"],
}
THANKS_REPLIES = ["You're welcome!", "You're welcome! Happy to help.", "You're very welcome. Anything else?"]
BYE = {
    "train": ["Bye", "Goodbye!", "See you later", "Bye for now", "I have to go, bye", "Talk to you later, bye"],
    "test": ["Catch you later, bye", "Good night, bye", "Farewell!", "ok bye!", "Gotta run. Bye"],
}
BYE_REPLIES = ["Goodbye! Have a nice day.", "Bye! Take care.", "Bye for now! Come back anytime."]
TIP_ASKS = {
    "train": ["Give me a {t} tip", "Can you give me a {t} tip?", "Any {t} tips?", "I need a quick {t} tip.",
              "Share one {t} tip please", "what's a good {t} tip"],
    "test": ["Do you have a {t} tip for me?", "Tell me one {t} tip.", "Got a {t} tip?", "Suggest a {t} tip"],
}
TIPS = {
    "train": {"sleep": "go to bed at the same time every night", "study": "study in short blocks with breaks",
              "cooking": "taste your food as you cook", "running": "start slow and build up each week",
              "saving money": "put a little aside on every payday", "writing": "write first and edit later",
              "gardening": "water early in the morning", "focus": "turn off notifications for an hour",
              "cleaning": "tidy one small area at a time", "travel": "pack the night before",
              "reading": "read a few pages every day", "health": "drink water through the day",
              "morning": "get up when the alarm rings", "packing": "roll your clothes", "coffee": "use fresh beans",
              "painting": "start with light colours", "walking": "wear comfortable shoes",
              "meeting": "share the agenda beforehand", "email": "keep it short", "cycling": "check your brakes",
              "swimming": "breathe out under water", "guitar": "practise a little every day",
              "camping": "test your tent at home", "shopping": "make a list first"},
    "test": {"productivity": "do the hardest task first", "fitness": "move a little every day",
             "stress": "take slow, deep breaths", "memory": "review new things the next day",
             "baking": "weigh your flour instead of using cups", "public speaking": "practise out loud twice"},
}
TIP_REPLIES = ["Here is a {t} tip: {tip}.", "A simple {t} tip: {tip}.", "One {t} tip is to {tip}."]
DEFINE_ASKS = {
    "train": ["What does '{w}' mean?", "Define {w}.", "What is the meaning of the word {w}?", "meaning of {w}?",
              "Explain the word '{w}'."],
    "test": ["What's the definition of {w}?", "Can you tell me what {w} means?", "{w}: what does it mean?"],
}
WORDS = {
    "train": {"generous": "willing to give more than is needed", "ancient": "very old",
              "brave": "ready to face danger or pain", "fragile": "easily broken",
              "humble": "not proud of yourself", "rapid": "very fast", "vast": "very large",
              "curious": "eager to learn or know something", "honest": "telling the truth",
              "silent": "making no sound", "gloomy": "dark or sad", "polite": "having good manners",
              "clever": "quick to learn", "fierce": "wild and strong", "gentle": "kind and soft",
              "narrow": "not wide", "timid": "shy and easily scared", "vivid": "bright and clear",
              "bold": "not afraid", "cozy": "warm and comfortable", "swift": "quick", "keen": "eager"},
    "test": {"calm": "quiet and peaceful", "tiny": "very small", "loyal": "faithful to someone",
             "weary": "very tired", "eager": "wanting to do something very much", "damp": "slightly wet"},
}
DEFINE_REPLIES = ["'{w}' means {d}.", "The word '{w}' means {d}."]
YES_NO = {
    "train": [("Is the sun a star?", "yes", "the sun is a star."), ("Is ice cold?", "yes", "ice is cold."),
              ("Can fish breathe underwater?", "yes", "fish breathe through gills."),
              ("Is the moon made of cheese?", "no", "the moon is made of rock."),
              ("Do cats bark?", "no", "cats meow; dogs bark."), ("Is fire hot?", "yes", "fire is hot."),
              ("Can people fly without help?", "no", "people need a plane to fly."),
              ("Is water wet?", "yes", "water makes things wet."),
              ("Do plants need light?", "yes", "plants need light to grow."),
              ("Is a week eight days long?", "no", "a week has seven days."),
              ("Is snow black?", "no", "snow is white.")],
    "test": [("Is the sea salty?", "yes", "sea water is salty."), ("Do birds have feathers?", "yes",
                                                                  "birds have feathers."),
             ("Is a year ten months long?", "no", "a year has twelve months."),
             ("Can a car swim?", "no", "a car cannot swim."), ("Is grass usually green?", "yes", "grass is green.")],
}
KINDS = ("greeting", "how", "thanks", "bye", "tip", "define", "yesno")


def exchange(split: str, rng: random.Random, kind: str) -> tuple[str, str, dict]:
    """One user turn of `kind` and its reference reply, with what the checker needs."""
    if kind == "greeting":
        return rng.choice(GREETINGS[split]), rng.choice(GREETING_REPLIES), {}
    if kind == "how":
        return rng.choice(HOW_ARE_YOU[split]), rng.choice(HOW_REPLIES), {}
    if kind == "thanks":
        return rng.choice(THANKS[split]), rng.choice(THANKS_REPLIES), {}
    if kind == "bye":
        return rng.choice(BYE[split]), rng.choice(BYE_REPLIES), {}
    if kind == "tip":
        t, tip = rng.choice(sorted(TIPS[split].items()))
        return rng.choice(TIP_ASKS[split]).format(t=t), rng.choice(TIP_REPLIES).format(t=t, tip=tip), {"topic": t}
    if kind == "define":
        w, d = rng.choice(sorted(WORDS[split].items()))
        return rng.choice(DEFINE_ASKS[split]).format(w=w), rng.choice(DEFINE_REPLIES).format(w=w, d=d), {"word": w}
    q, yes_no, why = rng.choice(YES_NO[split])
    return q, f"{yes_no.capitalize()}, {why}", {"yes_no": yes_no}


def small_talk(split: str, rng: random.Random, name: str) -> dict:
    """A conversation whose last user turn is small talk or an everyday request; one in three comes after an
    earlier exchange (a greeting, or another request), so the reply answers the last turn only."""
    kind = rng.choice(KINDS)
    messages = []
    if rng.random() < 1 / 3:
        first = "greeting" if kind in ("how", "tip", "define", "yesno") and rng.random() < 0.5 else \
            rng.choice(("tip", "define", "yesno"))
        q, a, _ = exchange(split, rng, first)
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    q, a, check = exchange(split, rng, kind)
    messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"messages": messages, "kind": kind, "name": name, **check}


def sensible(example: dict, text: str) -> bool:
    """Whether `text` is the right kind of reply to the example's last turn (see the module's docstring)."""
    low = text.lower().strip()
    words = low.replace("!", " ").replace(",", " ").replace(".", " ").split()
    kind = example["kind"]
    if kind == "greeting":
        ok = any(low.startswith(g) for g in GREETING_WORDS) or bool({"hi", "hello", "hey"} & set(words))
    elif kind == "how":
        ok = bool({"well", "good", "great", "fine"} & set(words))
    elif kind == "thanks":
        ok = "welcome" in low
    elif kind == "bye":
        ok = "bye" in low
    elif kind == "tip":
        ok = example["topic"] in low
    elif kind == "define":
        ok = example["word"] in low and "mean" in low
    else:
        ok = bool(words) and words[0] == example["yes_no"]
    return ok and example["name"].lower() not in low


class Chat(Task):
    name = "chat"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        return [small_talk(split, rng, config.sft.identity) for _ in range(n)]

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(sensible(example, reply_text(reply)))
