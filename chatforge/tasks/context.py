"""Reading from context: a short document in the user turn, as an uploaded file would be (meeting notes, a
timetable, a bio, a receipt, a weather report), and a question answered from it: a time, a name, a number,
a place. Each document holds two or more of the asked kind (two times, three cities), so the reply must copy
the right one: it quotes the document's line that holds the answer, as a tiny model copies a span whole far
more easily than it rephrases one.

Names, cities, times, prices, years and the other values are each hashed into a split (a third held out), the
question forms and the framings around the document are each split's own, so a held-out document is never
a training document. The checker wants the answer as a whole span and none of the document's other values
of its kind."""

import random
import re

from chatforge.config import Config
from chatforge.tasks.common import Task, hash_split, reply_text, split_rng

TEST_SHARE = 3  # one value in 3 is held out


def split_of(value: str) -> str:
    return hash_split(value, TEST_SHARE)


def _pools(values: list[str]) -> dict[str, list[str]]:
    return {s: [v for v in values if split_of(v) == s] for s in ("train", "test")}


FIRST = _pools(["Alice", "Omar", "Priya", "Tom", "Chen", "Maria", "Lukas", "Aisha", "Diego", "Hannah", "Ivan",
                "Yuki", "Sara", "Ben", "Fatima", "Leo", "Nina", "Raj", "Elena", "Sam", "Grace", "Kofi", "Marta",
                "Pablo", "Lena", "Jonas", "Amara", "Victor", "Rosa", "Hugo", "Ingrid", "Tariq", "Mei", "Oscar",
                "Clara", "Emil", "Zoe", "Ravi", "Anya", "Carlos", "Heidi", "Kenji", "Lucia", "Noah", "Olga", "Paul"])
LAST = _pools(["Smith", "Khan", "Garcia", "Novak", "Tanaka", "Okafor", "Muller", "Rossi", "Silva", "Patel",
               "Berg", "Lopez", "Kim", "Dubois", "Ivanova", "Moreau", "Costa", "Jensen", "Ali", "Wright", "Nagy",
               "Fischer", "Santos", "Cohen", "Larsen", "Reyes", "Haas", "Murphy", "Park", "Weber"])
CITIES = _pools(["Leeds", "Lyon", "Porto", "Oslo", "Dublin", "Krakow", "Munich", "Seville", "Bristol", "Ghent",
                 "Turin", "Bergen", "Graz", "Utrecht", "Nantes", "Malmo", "Cork", "Split", "Brno", "Aarhus",
                 "Basel", "Bilbao", "Genoa", "Leipzig", "Tampere", "Riga", "Vilnius", "Zagreb", "Cardiff", "Derby",
                 "Exeter", "Galway", "Hull", "Kiel", "Lille", "Bath", "Nice", "Pisa", "Bonn", "Delft", "Tartu"])
TIMES = _pools([f"{h:02d}:{m:02d}" for h in range(6, 22) for m in range(0, 60, 5)])
PRICES = _pools([f"${d}.{c:02d}" for d in range(1, 40) for c in range(0, 100, 5)])
YEARS = _pools([str(y) for y in range(1940, 2010)])
TEMPS = _pools([str(t) for t in range(0, 36)])
SMALL = _pools([str(n) for n in range(1, 40)])  # platforms, wind speeds
JOBS = _pools(["teacher", "nurse", "pilot", "baker", "lawyer", "chemist", "journalist", "carpenter", "architect",
               "librarian", "farmer", "dentist", "engineer", "painter", "chef", "plumber", "translator", "vet"])
ITEMS = _pools(["bread", "coffee", "apples", "milk", "cheese", "notebook", "batteries", "tea", "rice", "soap", "lamp",
                "honey", "pasta", "scarf", "oranges", "eggs", "candle", "butter", "jam", "pens", "towel", "kettle"])
EVENTS = ["budget review", "design review", "sales update", "hiring plan", "product demo", "safety training",
          "team lunch", "roadmap talk", "client call", "code review"]
SKIES = ["sunny", "cloudy", "rainy", "foggy", "windy", "stormy", "snowy", "clear"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
VEHICLES = ["Bus", "Train", "Ferry", "Coach"]

# question forms per split; {x} is what identifies the fact asked (an event, a city, an item)
QUESTIONS = {
    "train": {
        "event_time": ["What time is the {x}?", "When does the {x} start?", "At what time does the {x} begin?"],
        "event_who": ["Who leads the {x}?", "Who is running the {x}?"],
        "leave": ["What time does it leave {x}?", "When does it depart from {x}?"],
        "arrive": ["When does it arrive in {x}?", "What time does it get to {x}?"],
        "platform": ["Which platform does it leave from?", "What platform is it?"],
        "fare": ["How much is the fare?", "What does the ticket cost?"],
        "born_where": ["Where was {x} born?", "In which city was {x} born?"],
        "born_year": ["In what year was {x} born?", "When was {x} born?"],
        "lives": ["Where does {x} live now?", "Which city does {x} live in today?"],
        "job": ["What was {x}'s job?", "What did {x} work as?"],
        "price": ["How much did the {x} cost?", "What was the price of the {x}?"],
        "total": ["What was the total?", "How much was paid in total?"],
        "cashier": ["Who was the cashier?", "Who served the customer?"],
        "minutes": ["Who takes the minutes?", "Who is writing the minutes?"],
        "temp": ["What is the {x} temperature?", "How warm is it in the {x}?"],
        "sky": ["What is the weather like in the {x}?", "How is the sky in the {x}?"],
        "sunset": ["When is sunset?", "What time does the sun set?"],
    },
    "test": {
        "event_time": ["When is the {x} scheduled?", "At which time will the {x} happen?"],
        "event_who": ["Which person is in charge of the {x}?", "Who will handle the {x}?"],
        "leave": ["At what time is the departure from {x}?"],
        "arrive": ["What is the arrival time in {x}?"],
        "platform": ["Tell me the platform number."],
        "fare": ["What is the price of a ticket?"],
        "born_where": ["What is the birthplace of {x}?"],
        "born_year": ["Which year was {x} born in?"],
        "lives": ["Where is {x} living these days?"],
        "job": ["What profession did {x} have?"],
        "price": ["What did the {x} cost on this receipt?"],
        "total": ["What is the total amount on the receipt?"],
        "cashier": ["What is the name of the cashier?"],
        "minutes": ["Who is responsible for the minutes?"],
        "temp": ["Tell me the temperature in the {x}."],
        "sky": ["What will the sky be like in the {x}?"],
        "sunset": ["At what time will the sun go down?"],
    },
}
FRAMES = {
    "train": ["Here is a file:\n\n{doc}\n\nQuestion: {q}", "{doc}\n\n{q}", "{q}\n\n{doc}",
              "I uploaded notes.txt:\n```\n{doc}\n```\n{q}", "Read this:\n{doc}\nNow answer: {q}",
              "Document:\n{doc}\n\nUsing the document, answer: {q}"],
    "test": ["{q} Answer from this text:\n\n{doc}", "Attached file report.txt\n---\n{doc}\n---\nQuestion: {q}",
             "Use the text below to answer.\n\n{doc}\n\nQ: {q}"],
}


def _meeting(split: str, rng: random.Random, people: list[str]) -> tuple[str, list[tuple]]:
    e1, e2 = rng.sample(EVENTS, 2)
    t1, t2 = rng.sample(TIMES[split], 2)
    p1, p2, p3 = people
    lines = [f"The {e1} is at {t1}, led by {p1}.", f"The {e2} is at {t2}, led by {p2}.",
             f"The minutes are taken by {p3}."]
    return f"Meeting notes, {rng.choice(DAYS)}\n" + "\n".join(lines), [
        ("event_time", e1, t1, [t2], lines[0]), ("event_time", e2, t2, [t1], lines[1]),
        ("event_who", e1, p1, [p2, p3], lines[0]), ("event_who", e2, p2, [p1, p3], lines[1]),
        ("minutes", "", p3, [p1, p2], lines[2])]


def _timetable(split: str, rng: random.Random, people: list[str]) -> tuple[str, list[tuple]]:
    c1, c2 = rng.sample(CITIES[split], 2)
    t1, t2 = sorted(rng.sample(TIMES[split], 2))
    platform, fare = rng.choice(SMALL[split]), rng.choice(PRICES[split])
    lines = [f"It leaves {c1} at {t1} from platform {platform}.", f"It arrives in {c2} at {t2}.",
             f"The ticket fare is {fare}."]
    return f"{rng.choice(VEHICLES)} timetable, {rng.choice(DAYS)}\n" + "\n".join(lines), [
        ("leave", c1, t1, [t2], lines[0]), ("arrive", c2, t2, [t1], lines[1]),
        ("platform", "", platform, [], lines[0]), ("fare", "", fare, [], lines[2])]


def _bio(split: str, rng: random.Random, people: list[str]) -> tuple[str, list[tuple]]:
    p = people[0]
    c1, c2, c3 = rng.sample(CITIES[split], 3)
    y1, y2 = sorted(rng.sample(YEARS[split], 2))
    job = rng.choice(JOBS[split])
    pron = rng.choice(("She", "He"))
    lines = [f"{p} was born in {c1} in {y1}.", f"{pron} studied in {c2} and worked as a {job} from {y2}.",
             f"{pron} now lives in {c3}."]
    return " ".join(lines), [
        ("born_where", p, c1, [c2, c3], lines[0]), ("born_year", p, y1, [y2], lines[0]),
        ("lives", p, c3, [c1, c2], lines[2]), ("job", p, job, [], lines[1])]


def _receipt(split: str, rng: random.Random, people: list[str]) -> tuple[str, list[tuple]]:
    items = rng.sample(ITEMS[split], 3)
    prices = rng.sample(PRICES[split], 3)
    cents = sum(int(x[1:].replace(".", "")) for x in prices)
    total = f"${cents // 100}.{cents % 100:02d}"
    lines = [f"1 x {i} {p}." for i, p in zip(items, prices, strict=True)]
    lines += [f"Paid in total: {total}.", f"Served by the cashier {people[0]}."]
    head = f"Receipt, {rng.choice(CITIES[split])} store, {rng.choice(DAYS)} {rng.choice(TIMES[split])}\n"
    return head + "\n".join(lines), [
        ("price", i, p, [x for x in [*prices, total] if x != p], line)
        for i, p, line in zip(items, prices, lines, strict=False)] + [
        ("total", "", total, prices, lines[3]), ("cashier", "", people[0], [], lines[4])]


def _weather(split: str, rng: random.Random, people: list[str]) -> tuple[str, list[tuple]]:
    m, a = rng.sample(TEMPS[split], 2)
    s1, s2 = rng.sample(SKIES, 2)
    sunset, wind = rng.choice(TIMES[split]), rng.choice(SMALL[split])
    lines = [f"In the morning: {m} degrees, {s1}.", f"In the afternoon: {a} degrees, {s2}.",
             f"Wind {wind} km/h, sunset at {sunset}."]
    return f"Weather for {rng.choice(CITIES[split])}, {rng.choice(DAYS)}\n" + "\n".join(lines), [
        ("temp", "morning", m, [a], lines[0]), ("temp", "afternoon", a, [m], lines[1]),
        ("sky", "morning", s1, [s2], lines[0]), ("sky", "afternoon", s2, [s1], lines[1]),
        ("sunset", "", sunset, [], lines[2])]


DOCUMENTS = (_meeting, _timetable, _bio, _receipt, _weather)


def contains(text: str, span: str) -> bool:
    """`span` as a whole span of `text`, case and spacing aside (so "5" is not found in "15" or "$5.50")."""
    norm = " ".join(text.lower().split())
    return re.search(r"(?<![\w.$])" + re.escape(" ".join(span.lower().split())) + r"(?![\w]|\.\d)", norm) is not None


class Context(Task):
    name = "context"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        out = []
        for _ in range(n):
            firsts, lasts = rng.sample(FIRST[split], 3), rng.sample(LAST[split], 3)
            people = [f"{f} {last}" for f, last in zip(firsts, lasts, strict=True)]
            doc, facts = rng.choice(DOCUMENTS)(split, rng, people)
            kind, x, answer, others, line = rng.choice(facts)
            q = rng.choice(QUESTIONS[split][kind]).format(x=x)
            prompt = rng.choice(FRAMES[split]).format(doc=doc, q=q)
            out.append({"messages": [{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": line}],
                        "answer": answer, "others": others})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        text = reply_text(reply)
        return float(contains(text, example["answer"]) and not any(contains(text, o) for o in example["others"]))
