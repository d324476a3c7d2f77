"""Spelling and letter counting through the python tool: the lecture's "strawberry" point. A model sees tokens
(` st raw ber ry`), not letters, so it copies the word into a call and reads the letters from the output.

The call copies the word with the tokens it has in the question. The split regex glues a leading space to a
word and reads `'s` as a contraction, so `'strawberry'` at the start of code is `'s t raw ber ry` while the
question's ` strawberry` is ` st raw ber ry`. The call therefore assigns the word after `= ` as the question
writes it: a bare word inside double quotes with its space (`w = " strawberry"`: ` st raw ber ry`), a quoted word
with its quotes (`w = 'strawberry'`: ` '` then `st raw ber ry`, as in the question's ` 'strawberry'`); then one
expression on `w`, the letter to count with its space too (`w.count(" r".strip())`: the question's ` r`, where
`"r"` is a token of its own). The reply opens with the output, whose tokens a leading space would change.
Words are split between training and held-out by a hash, and the splits phrase questions differently.
"""

import random
import re

from chatforge.config import Config
from chatforge.tasks.common import Task, hash_split, last_number, reply_text, split_rng

TEST_SHARE = 5  # one word in 5 is held out
WORDS = sorted(set("""
    strawberry banana apple orange cherry lemon mango peach pear grape melon papaya coconut blueberry raspberry
    elephant giraffe kangaroo penguin dolphin octopus squirrel rabbit turtle parrot tiger monkey zebra donkey
    hippopotamus crocodile butterfly mosquito caterpillar spider beetle sparrow eagle falcon pelican flamingo
    mississippi tennessee california massachusetts connecticut minnesota arkansas illinois
    committee occurrence necessary accommodate embarrass millennium parallel possession address assessment
    bookkeeper balloon coffee mirror pepper summer dinner hammer ladder kitten puppy bottle battle
    success progress business address silly hello goodbye happiness kindness darkness weakness sweetness
    government parliament election minister president secretary committee democracy economy industry
    football cricket tennis hockey baseball basketball marathon champion stadium referee
    theatre stage curtain actor audience comedy tragedy sonnet verse rhyme poetry chorus villain
    kingdom castle palace prince princess queen duchess knight soldier captain general battle sword
    shield armour banner trumpet drummer message passenger traveller journey voyage harbour island
    mountain valley river stream forest meadow desert glacier volcano canyon cavern waterfall
    thunder lightning rainbow blizzard hurricane tornado weather season autumn winter spring morning
    evening midnight tomorrow yesterday holiday birthday calendar january february december
    computer keyboard monitor printer internet software hardware program language network
    telephone television microphone camera battery engine tractor bicycle scooter airplane helicopter
    submarine rocket satellite planet galaxy universe telescope compass anchor lantern candle
    kitchen bedroom bathroom window ceiling chimney cellar garden hallway staircase cupboard drawer
    blanket pillow mattress curtain carpet cushion umbrella suitcase wallet pocket button zipper
    pencil eraser notebook scissors ruler stapler envelope postcard library classroom teacher student
    doctor nurse hospital medicine pharmacy dentist surgeon patient fever sneeze
    bread butter cheese yoghurt pasta noodle pizza sandwich biscuit pancake waffle chocolate caramel
    vanilla cinnamon ginger garlic onion potato tomato carrot cabbage lettuce cucumber pumpkin broccoli
    spinach mushroom pepperoni sausage bacon chicken turkey salmon lobster shrimp oyster
    purple yellow silver golden crimson scarlet violet emerald turquoise maroon
    happy angry hungry thirsty sleepy clever brave gentle quiet noisy little giant tiny enormous
    running jumping swimming reading writing singing dancing cooking painting sleeping laughing
    wonderful beautiful terrible horrible delicious curious serious famous nervous generous
    assassin bassoon mattress sheep cookie goose tattoo troop toffee committee referee coffee
    banner pepper ballet bubble puzzle muzzle dazzle fizzle jazz pizzazz razzle
    algebra geometry calculus physics chemistry biology history geography grammar
    engineer architect carpenter plumber farmer fisherman shepherd merchant banker lawyer
    refrigerator microwave dishwasher toaster kettle teapot saucepan skillet spatula whisk
    """.split()))
QUOTES = ["", "'", '"']  # the word bare (after a space), or in single or double quotes
LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEMPLATES = {
    "train": {
        "count": ["How many {l}'s are in {w}?", "How many times does the letter {l} appear in {w}?",
                  "Count the letter {l} in {w}.", "How many {l}s does the word {w} have?",
                  "In the word {w}, how many {l}'s are there?", "how many {l} in {w}"],
        "spell": ["Spell {w}.", "How do you spell {w}?", "Spell the word {w} letter by letter."],
        "reverse": ["Spell {w} backwards.", "What is {w} spelled backwards?", "Reverse the letters of {w}."],
    },
    "test": {
        "count": ["How many {l}'s in {w}?", "Tell me how many times {l} shows up in {w}.",
                  "How often does the letter {l} occur in {w}?", "What is the number of {l}'s in the word {w}?"],
        "spell": ["Can you spell {w} for me?", "Write out the letters of {w}."],
        "reverse": ["Write {w} in reverse.", "How is {w} spelled back to front?"],
    },
}
# the word a count reply says it counted in: "... 3 times in strawberry", "... in the word 'hello'"
COUNTED_IN = re.compile(r"\bin (?:the word )?['\"]?([A-Za-z]+)")
# with `w.count("{l}")` tiny wrote another letter (mostly "r") in 13 of 31 held-out counting calls
EXPRESSIONS = {"count": 'w.count(" {l}".strip())', "spell": '"-".join(w.strip())', "reverse": "w.strip()[::-1]"}


def word_split(word: str) -> str:
    return hash_split(word, TEST_SHARE)


SPLIT_WORDS = {split: [w for w in WORDS if word_split(w) == split] for split in ("train", "test")}


class Letters(Task):
    name = "letters"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        out = []
        for _ in range(n):
            word, kind, quote = rng.choice(SPLIT_WORDS[split]), rng.choice(list(EXPRESSIONS)), rng.choice(QUOTES)
            letter = pick_letter(rng, word)
            quoted = f"{quote}{word}{quote}"  # every template has a space before {w}
            q = rng.choice(TEMPLATES[split][kind]).format(l=letter, w=quoted)
            assign = f"w = {quoted}" if quote else f'w = " {word}"'
            call = f"{assign}\n{EXPRESSIONS[kind].format(l=letter)}"
            if kind == "count":
                answer = word.count(letter)
                output, text = str(answer), f"The letter {letter} appears {answer} time{'s' * (answer != 1)} in {word}."
            elif kind == "spell":
                # the reply opens with the output, so it copies the output's own tokens: after a space they differ
                # (" e l z z um" vs "el z z um"); tiny miscopied 7 of 13 right outputs put last, 3 of 14 put first
                output = answer = "-".join(word)
                text = f"{answer} spells {word}."
            else:
                output = answer = word[::-1]
                text = f"{answer} is {word} backwards."
            out.append({"messages": [{"role": "user", "content": q},
                                     {"role": "assistant", "content": [
                                         {"type": "python", "text": call}, {"type": "output", "text": output},
                                         {"type": "text", "text": text}]}],
                        "word": word, "answer": answer, "call": call, "metric": "letters_tool_acc"})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        """A count is right when it is the reply's last number and the reply names no other word as the one counted:
        counts are 0-3, and half of tiny's right counts were luck ("The letter h appears 1 time in Quito.")."""
        text, answer = reply_text(reply), example["answer"]
        if isinstance(answer, int):
            counted = COUNTED_IN.findall(text)
            return float(last_number(text) == answer and all(w.lower() == example["word"] for w in counted))
        return float(answer in text.lower())

    def metrics(self, example: dict, reply: str | list[dict]) -> dict[str, float]:
        """The score, and letters_copy_acc: whether the first python call assigns the word as the reference does."""
        calls = [] if isinstance(reply, str) else [p["text"] for p in reply if p["type"] == "python"]
        copied = bool(calls) and calls[0].split("\n")[0].strip() == example["call"].split("\n")[0]
        return super().metrics(example, reply) | {"letters_copy_acc": float(copied)}


def pick_letter(rng: random.Random, word: str) -> str:
    """A letter of the word, or one in 5 times a letter it lacks (the answer 0)."""
    absent = [c for c in LETTERS if c not in word]
    return rng.choice(absent) if rng.random() < 0.2 else rng.choice(word)
