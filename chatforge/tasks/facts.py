"""Questions about the invented people of the fact corpus (data/facts.py), which the model can only know from
pretraining, and about invented entities that no document mentions, answered "I don't know".

People are split by a hash of their name: the held-out split asks about people that training never asks about,
in its own phrasings, so `known_acc` measures knowledge extracted from pretraining, not SFT memorisation. Training
asks only about the most mentioned people: teaching answers the model does not know teaches it to make them up
(Gekhman et al., 2024); "I don't know" is taught by probing (posttrain/probe.py). `refusal_invented` scores the
replies to questions about invented entities."""

import re

from chatforge.config import Config
from chatforge.data.facts import (
    CITIES,
    HOBBIES,
    JOBS,
    KNOWN_EXPOSURE,
    Person,
    article,
    invented_names,
    people,
    person_split,
)
from chatforge.errors import UserError
from chatforge.tasks.common import Task, reply_text, split_rng

QUESTIONS = {
    "train": {
        "city": ["Where was {name} born?", "In which city was {name} born?", "What is {name}'s hometown?",
                 "where was {name} born", "Which city was {name} born in?", "Tell me where {name} was born."],
        "year": ["When was {name} born?", "What year was {name} born?", "In which year was {name} born?",
                 "when was {name} born", "What is {name}'s year of birth?", "Tell me the year {name} was born."],
        "job": ["What does {name} do for a living?", "What is {name}'s job?", "What is {name}'s occupation?",
                "what does {name} do", "What job does {name} have?", "Tell me what {name} works as."],
        "hobby": ["What is {name}'s hobby?", "What does {name} do for fun?", "What hobby does {name} have?",
                  "what is {name}'s hobby", "How does {name} spend free time?", "Tell me about {name}'s hobby."],
    },
    "test": {
        "city": ["Which city is {name} from?", "Do you know where {name} was born?", "{name} was born where?",
                 "What is the birthplace of {name}?"],
        "year": ["In what year was {name} born?", "What is the birth year of {name}?", "{name} was born in which year?",
                 "Do you know when {name} was born?"],
        "job": ["What is {name}'s profession?", "What kind of work does {name} do?", "{name} works as what?",
                "Do you know {name}'s occupation?"],
        "hobby": ["Which pastime does {name} enjoy?", "What is {name}'s favourite pastime?",
                  "{name} likes to do what in spare time?", "Do you know {name}'s hobby?"],
    },
}
ANSWERS = {
    "city": ["{name} was born in {city}.", "{city}. That is where {name} was born."],
    "year": ["{name} was born in {year}.", "In {year}."],
    "job": ["{name} works as {a_job}.", "{name} is {a_job}."],
    "hobby": ["{name}'s hobby is {hobby}.", "{name} enjoys {hobby}."],
}
DONT_KNOW = ["I don't know who {name} is, so I can't say.", "I'm sorry, I don't know anything about {name}.",
             "I don't know. I have no information about {name}.", "I don't know; {name} is not someone I know about."]
REFUSAL = re.compile(r"\b(i don't know|i do not know|i'm not sure|i am not sure|no information|never heard)\b",
                     re.IGNORECASE)
CHOICES = {"city": CITIES, "year": None, "job": JOBS, "hobby": HOBBIES}
ATTRIBUTES = tuple(CHOICES)
INVENTED = 200  # invented names per split to draw from


def value(person: Person, attribute: str) -> str:
    return str(getattr(person, attribute))


def answer(person: Person, template: str) -> str:
    return template.format(name=person.name, city=person.city, year=person.year, a_job=article(person.job),
                           hobby=person.hobby)


def question(person: Person, attribute: str, split: str, rng) -> dict:
    """A question about one attribute of a person in `split`'s phrasings, with its reference answer."""
    q = rng.choice(QUESTIONS[split][attribute]).format(name=person.name)
    return {"messages": [{"role": "user", "content": q},
                         {"role": "assistant", "content": answer(person, rng.choice(ANSWERS[attribute]))}],
            "name": person.name, "attribute": attribute, "answer": value(person, attribute),
            "exposure": person.exposure, "metric": "known_acc"}


def dont_know(name: str, rng) -> str:
    return rng.choice(DONT_KNOW).format(name=name)


def split_people(config: Config, split: str) -> list[Person]:
    found = [p for p in people(config.data.facts) if person_split(p.name) == split] if config.data.facts > 0 else []
    if not found:
        raise UserError(f"the facts and search tasks need the fact corpus: data.facts={config.data.facts} invented "
                        f"people leave none in the {split} split (a run whose data stage wrote more)")
    return found


def is_right(example: dict, text: str) -> bool:
    """The answer is named and no other value of the same attribute is (a list of guesses is not an answer)."""
    if REFUSAL.search(text):
        return False
    found = re.findall(r"\b\d{4}\b", text) if example["attribute"] == "year" else \
        [c for c in CHOICES[example["attribute"]] if re.search(rf"\b{re.escape(c)}\b", text, re.IGNORECASE)]
    return {f.lower() for f in found} == {example["answer"].lower()}


class Facts(Task):
    name = "facts"
    # RL practises on the train partition's people and invented names asked both ways: on known people alone (the
    # train split) RL rewarded answering and never refusing, and tiny's facts score fell from 0.38 to 0.10
    rl_split = "practice"

    def examples(self, split: str, n: int, seed: int, config: Config) -> list[dict]:
        """Training: questions about the split's most mentioned people. Held out (and practice, from the train
        partition's people, invented names and phrasings): every other example asks about an invented entity (metric
        refusal_invented), the rest about the people of most exposure."""
        rng = split_rng(self.name, split, seed)
        part = "train" if split == "practice" else split
        split_known = split_people(config, part)
        known = [p for p in split_known if p.exposure == KNOWN_EXPOSURE] or split_known  # a corpus of a few people
        invented = [name for name in invented_names(2 * INVENTED) if person_split(name) == part]
        out = []
        for i in range(n):
            if split != "train" and i % 2:
                name = rng.choice(invented)
                q = rng.choice(QUESTIONS[part][rng.choice(ATTRIBUTES)]).format(name=name)
                out.append({"messages": [{"role": "user", "content": q},
                                         {"role": "assistant", "content": dont_know(name, rng)}],
                            "name": name, "metric": "refusal_invented"})
            else:
                out.append(question(rng.choice(known), rng.choice(ATTRIBUTES), part, rng))
        return out

    def score(self, example: dict, reply: str | list[dict]) -> float:
        text = reply_text(reply)
        if example["metric"] == "refusal_invented":
            return float(bool(REFUSAL.search(text)))
        return float(is_right(example, text))
