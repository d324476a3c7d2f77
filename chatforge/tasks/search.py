"""Looking something up: the user asks to search for a fact about a person of the fact corpus (data/facts.py);
the reply calls the search tool with the person's name, then states the answer found in the passages.

The tool's output part is what the runtime would paste in: the passages of the run's index that mention the
person (the fact documents cut as infer/search.py cuts them, up to tools.top_k, other fact passages after them as
BM25's partial matches), formatted by infer/search.py's format_results. It is not trained on; at evaluation the
engine runs the search over RUN/index and the reply is scored on its own words. Held-out people and phrasings
are disjoint from training's, and people of every exposure are asked about: a search is for what the model does
not know."""

import functools
import re

from chatforge.config import Config
from chatforge.data.facts import Person, documents, people
from chatforge.infer.search import Passage, format_results, split_passages
from chatforge.tasks.common import Task, reply_text, split_rng
from chatforge.tasks.facts import ANSWERS, ATTRIBUTES, answer, is_right, split_people, value

REQUESTS = {
    "train": {
        "city": ["Search for where {name} was born.", "Look up {name}'s birthplace.", "Find out where {name} was born.",
                 "Can you search where {name} was born?", "search: {name} birthplace"],
        "year": ["Search for the year {name} was born.", "Look up when {name} was born.",
                 "Find out {name}'s year of birth.", "Can you search when {name} was born?",
                 "search: {name} birth year"],
        "job": ["Search for what {name} does for a living.", "Look up {name}'s job.", "Find out {name}'s occupation.",
                "Can you search what {name} works as?", "search: {name} occupation"],
        "hobby": ["Search for {name}'s hobby.", "Look up what {name} does for fun.", "Find out {name}'s hobby.",
                  "Can you search what hobby {name} has?", "search: {name} hobby"],
    },
    "test": {
        "city": ["Please look up the city {name} was born in.", "Use search to tell me {name}'s hometown."],
        "year": ["Please look up {name}'s birth year.", "Use search to tell me what year {name} was born."],
        "job": ["Please look up {name}'s profession.", "Use search to tell me what {name} does for work."],
        "hobby": ["Please look up {name}'s favourite pastime.",
                  "Use search to tell me what {name} does in spare time."],
    },
}


@functools.lru_cache(maxsize=4)
def fact_passages(n_people: int) -> dict[str, list[Passage]]:
    """The fact documents' passages as the run's index holds them, by the names (full, and first alone) in them."""
    names = {p.name for p in people(n_people)} | {p.name.split()[0] for p in people(n_people)}
    found: dict[str, list[Passage]] = {name: [] for name in names}
    for doc_id, doc in documents(n_people):
        for text in split_passages(doc):
            words = re.findall(r"[A-Za-z]+", text)
            for name in ({f"{a} {b}" for a, b in zip(words, words[1:], strict=False)} | set(words)) & names:
                found[name].append(Passage(doc_id, "", text, 0.0))
    return found


def results(person: Person, n_people: int, k: int, rng) -> str:
    """What a search for the person's name returns: passages naming the person first, then partial matches (the
    first name alone), as BM25 ranks them."""
    found = fact_passages(n_people)
    hits = rng.sample(found[person.name], min(k, len(found[person.name])))
    partial = [p for p in found[person.name.split()[0]] if p not in hits]
    return format_results(hits + rng.sample(partial, min(k - len(hits), len(partial))))


class Search(Task):
    name = "search"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        rng = split_rng(self.name, split, seed)
        people = split_people(config, split)
        out = []
        for _ in range(n):
            person, attribute = rng.choice(people), rng.choice(ATTRIBUTES)
            q = rng.choice(REQUESTS[split][attribute]).format(name=person.name)
            reply = [{"type": "search", "text": person.name},
                     {"type": "output", "text": results(person, config.data.facts, config.tools.top_k, rng)},
                     {"type": "text", "text": answer(person, rng.choice(ANSWERS[attribute]))}]
            out.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}],
                        "name": person.name, "attribute": attribute, "answer": value(person, attribute)})
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        return float(is_right(example, reply_text(reply)))
