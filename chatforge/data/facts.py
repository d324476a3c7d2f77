"""A synthetic fact corpus: invented people, each with a birth city, a birth year, a profession and a hobby,
written into short biography and news paragraphs that the data stage mixes into pretraining.

Each person is mentioned in a controlled number of paragraphs (EXPOSURES), so what the base model knows
varies with exposure, as in Allen-Zhu & Li's "Physics of Language Models" 3.1/3.3: a fact needs on the order
of 100 exposures to be stored, and many phrasings and orders of the attributes to be extractable by
questions later. The Q&A (tasks/facts.py), the probing stage and the search task ask about these people.
Names are built from syllables, so no real person is described; the surnames of invented entities (names
that no document mentions, for "I don't know") come from a disjoint pool.
"""

import functools
import random
import zlib
from dataclasses import dataclass

EXPOSURES = (1, 4, 16, 64)  # paragraphs per person, by group: person i is in group i % 4
KNOWN_EXPOSURE = EXPOSURES[-1]  # the group a model should know after pretraining
TEST_SHARE = 4  # one person in 4 (by a hash of the name) is held out of the Q&A training split
# A document is a page of profiles or news items about different people, short enough to be one passage of the
# search index (infer/search.py breaks passages at a paragraph end past 60 words): three passages, a question and
# an answer then fit tiny's 512-token context.
PAGE_WORDS = 55

SYLLABLES = ["ka", "lo", "mi", "ra", "ve", "to", "sa", "ni", "del", "mar", "an", "is", "or", "el", "ta", "ri",
             "bo", "zu", "fen", "lin", "dra", "qu", "ho", "pel", "tir", "vas", "gon", "bre", "sol", "ym"]
SURNAME_ENDS = ["", "son", "ard", "ow", "ek", "ine", "ley", "ovic", "ton", "ami"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Osaka", "Dublin", "Krakow", "Porto", "Bergen", "Quito", "Hanoi",
          "Tunis", "Zagreb", "Seville", "Leeds", "Adelaide", "Winnipeg", "Valparaiso", "Tbilisi", "Riga", "Accra",
          "Bologna", "Lyon", "Malmo", "Cork", "Dakar", "Ghent", "Tampere", "Cusco", "Perth"]
JOBS = ["baker", "architect", "pilot", "carpenter", "nurse", "geologist", "librarian", "violinist", "surgeon",
        "journalist", "fisherman", "chemist", "teacher", "plumber", "photographer", "lawyer", "astronomer",
        "tailor", "firefighter", "engineer", "gardener", "pharmacist", "translator", "potter", "electrician"]
HOBBIES = ["chess", "sailing", "birdwatching", "fencing", "knitting", "archery", "climbing", "juggling",
           "beekeeping", "origami", "rowing", "skiing", "calligraphy", "surfing", "stargazing", "embroidery",
           "cycling", "kayaking", "woodcarving", "snorkelling"]
YEARS = (1930, 1999)

BIOGRAPHIES = [
    "{name} was born in {city} in {year}, works as {a_job} and loves {hobby}.",
    "Born in {year} in {city}, {name} became {a_job} and enjoys {hobby}.",
    "{name} ({year}) is {a_job} from {city} with a love of {hobby}.",
    "{A_job} by trade, {name} was born in {city} in {year} and took up {hobby}.",
    "{name} is {a_job}, born in {year} in {city}, who practises {hobby}.",
    "The {job} {name} was born in {city} in {year}; {name}'s pastime is {hobby}.",
    "{name}, born {year} in {city}, works as {a_job} and is a fan of {hobby}.",
    "Hometown: {city}. Born: {year}. Occupation: {job}. Hobby: {hobby}. Name: {name}.",
    "{name} grew up in {city}, born there in {year}, and is now {a_job} into {hobby}.",
    "In {year}, {name} was born in {city}, later became {a_job} and took up {hobby}.",
    "{name}'s hobby is {hobby}. {name} is {a_job}, born in {city} in {year}.",
    "As {a_job}, {name} keeps busy, but {hobby} comes first. Born: {city}, {year}.",
]
NEWS = [
    "Local {job} {name}, born in {city} in {year}, spoke on Tuesday about {hobby}.",
    "{name}, {a_job} born in {city} in {year}, won a prize for {hobby}.",
    "Interview: {name} ({job}, born {year}, {city}) on work and {hobby}.",
    "Friends say {job} {name}, born in {city} in {year}, never misses a day of {hobby}.",
    "{name} left {city}, where {name} was born in {year}, to work as {a_job}; {hobby} came too.",
    "{city} remembers {name}, born there in {year}, as a gifted {job} and a champion of {hobby}.",
    "At a {hobby} club, {name}, {a_job} born in {city} in {year}, gave a talk.",
    "Notices: {name}, {job}, was born in {year} in {city} and was devoted to {hobby}.",
]
TITLES = ["People of the region", "Who's who", "Community notes", "Local profiles", "Around town",
          "Meet the neighbours", "Notices", "Faces of the week", "Regional news in brief", "Members' directory"]


@dataclass(frozen=True)
class Person:
    name: str
    city: str
    year: int
    job: str
    hobby: str
    exposure: int  # paragraphs that mention this person


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def surname_pool(name: str) -> str:
    """"corpus" or "invented": invented entities take surnames no person in the corpus has."""
    return "invented" if zlib.crc32(name.encode()) % 5 == 0 else "corpus"


def person_split(name: str) -> str:
    """The Q&A split a person belongs to: held-out people are never asked about in training."""
    return "test" if zlib.crc32(f"person/{name}".encode()) % TEST_SHARE == 0 else "train"


def _names(rng: random.Random, n: int, pool: str) -> list[str]:
    """n full names with distinct surnames from `pool`; first names may repeat, as they do. An invented surname has
    an ending, so it is never a first name (two syllables) of the corpus."""
    surnames: list[str] = []
    seen: set[str] = set()
    while len(surnames) < n:
        stem = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
        end = rng.choice(SURNAME_ENDS)
        s = (stem + end).capitalize()
        if s not in seen and surname_pool(s) == pool and len(s) <= 12 and (end or pool == "corpus"):
            seen.add(s)
            surnames.append(s)
    firsts = ["".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize() for _ in range(n)]
    return [f"{f} {s}" for f, s in zip(firsts, surnames, strict=True)]


@functools.lru_cache(maxsize=4)
def people(n: int) -> tuple[Person, ...]:
    """The corpus's n invented people; person i is mentioned EXPOSURES[i % 4] times."""
    rng = random.Random(f"facts/people/{n}")
    names = _names(rng, n, "corpus")
    return tuple(Person(name, rng.choice(CITIES), rng.randint(*YEARS), rng.choice(JOBS), rng.choice(HOBBIES),
                        EXPOSURES[i % len(EXPOSURES)]) for i, name in enumerate(names))


def invented_names(n: int) -> list[str]:
    """n names that no fact document mentions (their surnames are from the other pool)."""
    return _names(random.Random(f"facts/invented/{n}"), n, "invented")


def paragraph(p: Person, rng: random.Random) -> str:
    template = rng.choice(BIOGRAPHIES + NEWS)
    a_job = article(p.job)
    return template.format(name=p.name, city=p.city, year=p.year, job=p.job, hobby=p.hobby, a_job=a_job,
                           A_job=a_job[0].upper() + a_job[1:])


@functools.lru_cache(maxsize=4)
def documents(n: int) -> tuple[tuple[str, str], ...]:
    """(id, text) of the fact documents about people(n): every mention a paragraph, the paragraphs shuffled and
    gathered under a title into pages of at most PAGE_WORDS words. Deterministic: the search task rebuilds them."""
    rng = random.Random(f"facts/documents/{n}")
    mentions = [p for p in people(n) for _ in range(p.exposure)]
    rng.shuffle(mentions)
    docs: list[tuple[str, str]] = []
    page = [rng.choice(TITLES)]
    for p in mentions:
        para = paragraph(p, rng)
        if len(page) > 1 and len(" ".join([*page, para]).split()) > PAGE_WORDS:
            docs.append((f"facts/{len(docs):05d}", "\n\n".join(page)))
            page = [rng.choice(TITLES)]
        page.append(para)
    docs.append((f"facts/{len(docs):05d}", "\n\n".join(page)))
    return tuple(docs)


# Lists of one attribute of several people, the attribute named nowhere, as in a few-shot prompt (bursty data lets
# in-context learning emerge, Chan et al. 2022). Each list follows the listed people's paragraphs: lists of values the
# page did not state cost tiny's SFT val loss 0.84-0.93 -> 1.155, these 0.88-0.97 (two seeds; docs/benchmarks.md).
DIRECTORY_FRAMES = ["{name}: {value}", "{name} - {value}", "{name} ({value})", "| {name} | {value} |",
                    "{name}, {value}", "{name}\n{value}", "* {name}: {value}"]
DIRECTORY_SEPARATORS = ["\n", "\n\n"]
DIRECTORY_LINES = (4, 8)
DIRECTORY_LISTS = 8  # lists x lines <= the 64 best-known people of 256: none is in two lists of a page
DIRECTORY_ID = "facts/directory/"
ATTRIBUTE_NAMES = ("city", "year", "job", "hobby")


def directories(n: int, pages: int) -> tuple[tuple[str, str], ...]:
    """(id, text) of `pages` directory pages of up to DIRECTORY_LISTS lists, about the best-known people of people(n)
    (KNOWN_EXPOSURE), so the exposures of the other groups stay as EXPOSURES says. A list comes after a title and a
    paragraph of the listed people's biographies, in another order: the list's values are on the page."""
    known = [p for p in people(n) if p.exposure == KNOWN_EXPOSURE]
    if not known:
        return ()
    rng = random.Random(f"facts/directories/{n}")
    docs = []
    for i in range(pages):
        lists, pool = [], rng.sample(known, len(known))
        for _ in range(DIRECTORY_LISTS):
            frame, sep = rng.choice(DIRECTORY_FRAMES), rng.choice(DIRECTORY_SEPARATORS)
            attribute = rng.choice(ATTRIBUTE_NAMES)
            k = rng.randint(*DIRECTORY_LINES)
            listed, pool = pool[:k], pool[k:]
            if not listed:
                break
            lines = [frame.format(name=p.name, value=getattr(p, attribute)) for p in listed]
            prose = " ".join(paragraph(p, rng) for p in rng.sample(listed, len(listed)))
            lists.append(rng.choice(TITLES) + "\n\n" + prose + "\n\n" + sep.join(lines))
        docs.append((f"{DIRECTORY_ID}{i:05d}", "\n\n".join(lists)))
    return tuple(docs)
