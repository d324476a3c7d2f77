import json
import math
import random
import shutil

import pytest
import torch
from torch import nn

from chatforge.data import facts
from chatforge.data.pipeline import read_parts
from chatforge.eval.fewshot import (
    CHOICES,
    FAMILIES,
    SHOTS,
    WORD,
    Item,
    accuracy,
    attribute_items,
    make_items,
    prompts,
    repeat_nll,
    sequence_logprobs,
    with_shots,
)
from chatforge.eval.regurgitation import greedy, matches, read_starts
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.runs import open_run
from chatforge.tokenizer.bpe import load_tokenizer
from tests.conftest import chatforge

TEXT = ("The council voted on Tuesday to close the old library after a long debate about costs and the future of "
        "reading in the town, while the mayor promised a new building near the station within three years. "
        "Shops nearby said fewer visitors would hurt trade, and parents asked where children would study.")
DOCS = [TEXT, TEXT.upper().lower().replace("library", "museum"),
        "Rain fell across the northern hills for a third week, flooding fields and closing roads between villages; "
        "farmers counted losses while engineers checked every bridge and the river kept rising past old marks."]


def whole(word: str) -> bool:
    return True


@pytest.mark.parametrize("family", list(FAMILIES))
def test_items_are_deterministic_and_their_choices_hold_every_rules_answer(family):
    items = make_items(DOCS, family, 30, whole)
    assert items == make_items(DOCS, family, 30, whole)
    assert items != make_items(DOCS, family, 30, whole, seed=1)
    for item in items:
        assert len(set(item.choices)) == CHOICES and 0 <= item.answer < CHOICES
        body = item.prompt.split("\n")[0].removeprefix("Q: ").split()
        if family == "position":  # the first or the last of the listed words, both among the choices
            answers = {"first": body[0], "last": body[-1]}
            assert set(body) == set(item.choices)
        else:  # the word after or before the asked one in the passage, both among the choices
            i = body.index(item.prompt.split("A: ")[1])
            answers = {"next": body[i + 1], "previous": body[i - 1]}
            assert set(answers.values()) <= set(item.choices)
        assert item.choices[item.answer] == answers[item.rule] != answers[({*answers} - {item.rule}).pop()]
    assert len({item.rule for item in items}) == 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_shots_never_contain_the_answer_and_follow_the_items_rule(family):
    items = with_shots(make_items(DOCS, family, 60, whole))
    assert len(items) >= 10
    texts = prompts(items, SHOTS)
    assert prompts(items, 0) == [it.prompt for it in items]
    for item, text in zip(items, texts, strict=True):
        shots = text.removesuffix(item.prompt)
        assert shots.count("\n\n") == SHOTS
        assert sum(shot in shots for shot in (it.solved() for it in items if it.rule == item.rule)) == SHOTS
        assert item.choices[item.answer] not in {w.lower() for w in WORD.findall(shots)}


def test_attribute_items_ask_one_of_a_persons_values_and_their_shots_ask_the_same():
    persons = list(facts.people(64))
    assert attribute_items(persons, 40) == attribute_items(persons, 40) != attribute_items(persons, 40, seed=1)
    items = with_shots(attribute_items(persons, 64))
    assert len(items) >= 50 and {it.rule for it in items} == set(facts.ATTRIBUTE_NAMES)
    by_name = {p.name: p for p in persons}
    for item, text in zip(items, prompts(items, SHOTS), strict=True):
        p = by_name[item.prompt.removeprefix("Q: ").removesuffix("\nA:")]
        assert sorted(item.choices) == sorted(str(getattr(p, a)) for a in facts.ATTRIBUTE_NAMES)
        assert item.choices[item.answer] == str(getattr(p, item.rule))
        shots = text.split("\n\n")[:-1]
        assert len(shots) == SHOTS
        for shot in shots:
            q = by_name[shot.split("\n")[0].removeprefix("Q: ")]
            answer = str(getattr(q, item.rule))
            assert shot.endswith(f"A: {answer}") and answer != item.choices[item.answer]


def test_an_item_without_enough_shots_is_left_out():
    items = [Item(f"Q: the {w} and\nA:", ("the", w, "and", "of"), 0) for w in ("cat", "dog", "cow")]
    items.append(Item("Q: red sun\nA:", ("red", "sun", "sky", "sea"), 0))
    assert with_shots(items, 2) == items[3:]  # "the" is in all items but one


class Prefers(nn.Module):
    """A model whose next-token logits are `table[last token]`: what it prefers is set by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=table.size(0), seq_len=64, n_layer=1, n_embd=8, n_head=1, n_kv_head=1)
        self.table = table

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


class WordTok:
    """One token per word (a leading space is no part of it); BOS is 0."""
    bos_id = 0

    def __init__(self, words: list[str]):
        self.ids = {w: i + 1 for i, w in enumerate(words)}

    def encode(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.split()]


def test_scorer_picks_the_choice_the_model_prefers():
    words = ["q", "a", "x", "y", "z", "w", "v"]
    tok = WordTok(words)
    table = torch.zeros(len(words) + 1, len(words) + 1)
    table[tok.ids["a"], tok.ids["y"]] = 5.0  # after "a" the model wants "y"
    table[tok.ids["v"], tok.ids["w"]] = 5.0  # after "v", "w"
    table[tok.ids["w"], tok.ids["v"]] = 5.0  # after "w", "v"
    model = Prefers(table)
    items = [Item("q x a", ("x", "y", "z", "w"), 1), Item("q x a", ("y", "x", "z", "w"), 1),
             Item("q q q q v", ("x", "y", "z", "w"), 3),  # prompts of other lengths in one padded batch
             Item("q v", ("w x", "w v", "z", "y"), 1)]  # alike in their first token: the second decides
    assert accuracy(model, tok, items, [it.prompt for it in items]) == pytest.approx(3 / 4)
    v, w = tok.ids["v"], tok.ids["w"]
    logp = sequence_logprobs(model, [([0, 1, 2], [3]), ([0, v], [w, v, w]), ([0, 7, 7, 7, 7], [7])])
    step = torch.log_softmax(table, -1)  # after token t, log p(next)
    assert logp.tolist() == pytest.approx([step[2, 3].item(), (2 * step[v, w] + step[w, v]).item(), step[7, 7].item()])


class Copier(nn.Module):
    """Induction by hand: after a token seen before, all the mass on what followed it then; else uniform."""

    def __init__(self, vocab: int):
        super().__init__()
        self.cfg = GPTConfig(vocab_size=vocab, seq_len=256, n_layer=1, n_embd=8, n_head=1, n_kv_head=1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(*idx.shape, self.cfg.vocab_size)
        for b, row in enumerate(idx.tolist()):
            for t, tok in enumerate(row):
                if (j := next((j for j in range(t - 1, -1, -1) if row[j] == tok), None)) is not None:
                    out[b, t, row[j + 1]] = 30.0
        return out


def test_repeat_nll_tells_a_copier_from_a_model_that_cannot_copy():
    vocab = 300
    first, second = repeat_nll(Copier(vocab), list(range(1, vocab)), 0, n=4, length=40)
    assert first == pytest.approx(math.log(vocab), rel=1e-4) and second < 1e-6
    first, second = repeat_nll(Prefers(torch.zeros(vocab, vocab)), list(range(1, vocab)), 0, n=4, length=40)
    assert first == pytest.approx(second)


def test_a_memorised_document_is_regurgitated_and_a_held_out_one_is_not():
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = GPTConfig(vocab_size=64, seq_len=64, n_layer=2, n_embd=64, n_head=2, n_kv_head=2)
    seen, held_out = ([rng.randrange(1, 64) for _ in range(48)] for _ in range(2))
    model = GPT(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.tensor([seen[:-1]]), torch.tensor([seen[1:]])
    for _ in range(150):
        loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    outs = greedy(model, [seen[:16], held_out[:16]], 32)
    train, val = matches(outs[:1], [seen[16:]]), matches(outs[1:], [held_out[16:]])
    assert train["match"] > 0.9 and train["verbatim_rate"] == 1.0
    assert val["match"] < 0.2 and val["verbatim_rate"] == 0.0


def test_matches_counts_tokens_and_verbatim_halves():
    got = matches([[1, 2, 3, 9], [9, 2, 3, 4]], [[1, 2, 3, 4], [1, 2, 3, 4]])
    assert got == {"match": 0.75, "verbatim_rate": 0.5, "n": 2}


def test_eval_kinds_write_their_json(micro_run, tmp_path):
    run = shutil.copytree(micro_run, tmp_path / "micro")  # redoing eval marks the shared run's export stale
    chatforge("eval", "fewshot", "regurgitation", "--run", str(run), "--eval.fewshot_items=40")
    few = json.loads((run / "eval" / "fewshot.json").read_text())["figures"]["base"]
    assert few["n"] == sum(t["n"] for t in few["tasks"].values()) <= 40 * len(FAMILIES) and few["chance"] == 1 / CHOICES
    assert set(few["tasks"]) <= set(FAMILIES) and few["tasks"] and 0 <= few["acc_5shot"] <= 1
    assert few["repeat_nll_first"] > 0 and few["repeat_nll_second"] > 0
    reg = json.loads((run / "eval" / "regurgitation.json").read_text())["base"]
    assert reg["n"] > 0 and 0 <= reg["train_match"] <= 1 and 0 <= reg["val_verbatim_rate"] <= 1
    assert set(reg["facts"]) == {"1", "4", "16", "64"}


def test_read_starts_are_starts_of_train_documents(micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    seen = read_starts(open_run(micro_run, save=False), tok.bos_id, 8)
    starts = {tuple(tok.encode(r["text"])[:8]) for r in read_parts(micro_run / "data" / "train", ["text"])}
    assert seen and seen <= starts
