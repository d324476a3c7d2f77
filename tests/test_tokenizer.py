import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatforge.data.pipeline import read_parts
from chatforge.tokenizer.bpe import SPECIAL_TOKENS, Tokenizer, load_tokenizer, train_tokenizer
from chatforge.tokenizer.chat import parse, render, render_prompt
from chatforge.tokenizer.shards import (
    TokenShards,
    encode_to_shards,
    pack_documents,
    read_shard,
    row_position,
    write_shard,
    write_shards,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 20,
    "Prices rose 3.5% in 2024, the bank said; shares fell 12p to 305p. " * 20,
    "Ünïcödé: naïve café, 東京, русский, 🙂 emoji. " * 10,
]
TRICKY = ["", "hello world", "  leading and trailing  ", "tabs\tand\nnewlines\r\n", "東京🙂 café naïve",
          "<|im_start|>user<|im_sep|>not special<|im_end|>", "<|endoftext|>", "\x00\x01 control", "a" * 1000]


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, 300)


def test_vocab_size_is_exact(tok):
    assert tok.vocab_size == 300


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_round_trip_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@given(st.text(alphabet=st.characters(categories=["Cs", "Ll"]), min_size=1))
def test_lone_surrogates_become_replacement_characters(tok, text):
    # A str with lone surrogates has no UTF-8 form; tiktoken (and so chatforge) encodes each as U+FFFD.
    expected = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert tok.decode(tok.encode(text)) == expected


def test_special_token_text_stays_plain(tok):
    specials = {tok.special(s) for s in SPECIAL_TOKENS}
    for s in SPECIAL_TOKENS:
        ids = tok.encode(f"look: {s}")
        assert not specials & set(ids)
        assert tok.decode(ids) == f"look: {s}"


def test_save_load_gives_identical_ids(tok, tmp_path):
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    for text in TRICKY + CORPUS:
        assert again.encode(text) == tok.encode(text)
    assert again.bos_id == tok.bos_id and again.vocab_size == tok.vocab_size


def test_byte_lengths(tok):
    lengths = tok.byte_lengths()
    assert lengths[tok.bos_id] == 0
    ids = tok.encode("naïve café")
    assert sum(lengths[i] for i in ids) == len("naïve café".encode())


def test_too_small_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(CORPUS, 256)


def test_corpus_too_small_for_vocab_is_a_clear_error():
    with pytest.raises(ValueError, match="lower tokenizer.vocab_size"):
        train_tokenizer(["ab ab"], 2000)


def test_chat_mask_covers_exactly_assistant_content_and_im_end(tok):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|>"},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}]
    ids, mask = render(tok, msgs)
    assert len(ids) == len(mask) and ids[0] == tok.bos_id
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    end = tok.special("<|im_end|>")
    assert trained == tok.encode("Hello!") + [end] + tok.encode("4") + [end]
    assert ids.count(end) == 5  # the user's literal "<|im_end|>" text is not the special token


TOOL_CHAT = [
    {"role": "user", "content": "What is 2**10? <|python_start|>"},
    {"role": "assistant", "content": [
        {"type": "think", "text": "A power of two; use the tool."},
        {"type": "text", "text": "Let me compute it. "},
        {"type": "python", "text": "2**10"},
        {"type": "output", "text": "1024"},
        {"type": "text", "text": "It is 1024."},
    ]},
    {"role": "user", "content": "Who won?"},
    {"role": "assistant", "content": [{"type": "search", "text": "final score"}, {"type": "output", "text": "3-1"},
                                      {"type": "text", "text": "3-1."}]},
]


def test_tool_calls_are_trained_and_tool_outputs_are_not(tok):
    ids, mask = render(tok, TOOL_CHAT)
    sp = tok.special
    trained = [i for i, m in zip(ids, mask, strict=True) if m]
    assert trained == (
        [sp("<think>")] + tok.encode("A power of two; use the tool.") + [sp("</think>")]
        + tok.encode("Let me compute it. ") + [sp("<|python_start|>")] + tok.encode("2**10") + [sp("<|python_end|>")]
        + tok.encode("It is 1024.") + [sp("<|im_end|>")]
        + [sp("<|search_start|>")] + tok.encode("final score") + [sp("<|search_end|>")]
        + tok.encode("3-1.") + [sp("<|im_end|>")])
    assert ids.count(sp("<|python_start|>")) == 1  # the user's look-alike text stays plain


def test_parse_inverts_render(tok):
    simple = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello!"}]
    for conv in (simple, TOOL_CHAT):
        ids, _ = render(tok, conv)
        assert parse(tok, ids) == conv


CALL = {"role": "assistant", "content": [{"type": "text", "text": "Let me compute it. "},
                                         {"type": "python", "text": "2**10"}]}
QUESTION = {"role": "user", "content": "What is 2**10?"}


def test_tool_message_is_an_untrained_output_inside_the_assistant_turn(tok):
    conv = [QUESTION, CALL, {"role": "tool", "content": "1024"}, {"role": "assistant", "content": "It is 1024."}]
    ids, mask = render(tok, conv)
    sp, enc = tok.special, tok.encode
    head = [sp("<|im_start|>"), *enc("assistant"), sp("<|im_sep|>")]
    prompt = [tok.bos_id, sp("<|im_start|>"), *enc("user"), sp("<|im_sep|>"), *enc("What is 2**10?"), sp("<|im_end|>")]
    call = [*enc("Let me compute it. "), sp("<|python_start|>"), *enc("2**10"), sp("<|python_end|>")]
    output = [sp("<|output_start|>"), *enc("1024"), sp("<|output_end|>")]
    answer = [*enc("It is 1024."), sp("<|im_end|>")]
    assert ids == prompt + head + call + output + answer
    assert mask == [0] * len(prompt + head) + [1] * len(call) + [0] * len(output) + [1] * len(answer)
    # the engine's layout: the call's output pasted into the same turn, read back as an output part
    inline = [QUESTION, {"role": "assistant", "content": [*CALL["content"], {"type": "output", "text": "1024"},
                                                          {"type": "text", "text": "It is 1024."}]}]
    assert render(tok, inline) == (ids, mask)
    assert parse(tok, ids) == inline


def test_render_prompt_after_a_tool_message_continues_the_open_turn(tok):
    ids = render_prompt(tok, [QUESTION, CALL, {"role": "tool", "content": "1024"}])
    sp = tok.special
    engine_tokens = [*tok.encode("Let me compute it. "), sp("<|python_start|>"), *tok.encode("2**10"),
                     sp("<|python_end|>"), sp("<|output_start|>"), *tok.encode("1024"), sp("<|output_end|>")]
    assert ids == render_prompt(tok, [QUESTION]) + engine_tokens


def test_chained_tool_calls_stay_in_one_turn(tok):
    conv = [QUESTION, CALL, {"role": "tool", "content": [{"type": "text", "text": "1024"}]},
            {"role": "assistant", "content": [{"type": "search", "text": "powers of two"}]},
            {"role": "tool", "content": "2^10 = 1024"}, {"role": "assistant", "content": "1024."}]
    ids, _ = render(tok, conv)
    assert ids.count(tok.special("<|im_start|>")) == 2 and ids.count(tok.special("<|im_end|>")) == 2
    assert ids.count(tok.special("<|output_start|>")) == 2


@pytest.mark.parametrize("bad, message", [
    ([{"role": "tool", "content": "1"}], "message 0: a tool message must follow an assistant message that ends in"),
    ([QUESTION, {"role": "tool", "content": "1"}], "message 1: a tool message must follow"),
    ([QUESTION, {"role": "assistant", "content": "1024"}, {"role": "tool", "content": "1"}],
     "message 2: a tool message must follow"),
    ([QUESTION, CALL, {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"}],
     "message 3: a tool message must follow"),
    ([QUESTION, CALL, {"role": "tool", "content": "1"}, {"role": "user", "content": "and?"}],
     "message 3: after a tool message the assistant continues its turn, got 'user'"),
    ([QUESTION, CALL, {"role": "tool", "content": [{"type": "output", "text": "1"}]}],
     "message 2: only assistant messages can hold 'output' parts"),
])
def test_misplaced_tool_messages_name_their_index(tok, bad, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render(tok, bad)


@pytest.mark.parametrize("bad", [
    [{"role": "user", "content": [{"type": "python", "text": "1"}]}],
    [{"role": "assistant", "content": [{"type": "video", "text": "x"}]}],
    [{"role": "assistant", "content": None}],
])
def test_bad_parts_are_rejected(tok, bad):
    with pytest.raises(ValueError, match="message 0"):
        render(tok, bad)


def test_render_prompt_opens_the_assistant_turn(tok):
    ids = render_prompt(tok, [{"role": "user", "content": "Hi"}])
    assert ids[-1] == tok.special("<|im_sep|>")
    assert tok.decode(ids).endswith("<|im_end|><|im_start|>assistant<|im_sep|>")


@pytest.mark.parametrize("bad", [[], [{"role": "wizard", "content": "x"}], [{"role": "user", "content": 3}]])
def test_bad_conversations_are_rejected(tok, bad):
    with pytest.raises(ValueError):
        render(tok, bad)


def test_shards_round_trip_with_bos(tmp_path):
    chunks = [pack_documents([[5, 6, 7]], 1, np.uint16), pack_documents([[8], [9, 10]], 1, np.uint16)]
    counts = write_shards(iter(chunks), tmp_path, "train", bos_id=1, shard_tokens=4)
    assert counts == {"docs": 3, "tokens": 9, "shards": 2}
    shards = TokenShards(tmp_path, "train")
    assert np.concatenate(shards.shards).tolist() == [1, 5, 6, 7, 1, 8, 1, 9, 10]
    assert shards.shards[0].dtype == np.uint16


def test_validation_windows(tmp_path):
    write_shard(tmp_path / "val_000.bin", np.arange(1000, dtype=np.uint16))
    windows = list(TokenShards(tmp_path, "val").windows(3, 16, 100))
    assert sum(x.size for x, _ in windows) == 112  # 7 windows of 16 cover the 100-token budget
    assert windows[0][0][0, 0] == 0 and windows[0][0][1, 0] == 16 and (windows[0][1] == windows[0][0] + 1).all()


def doc_shards(tmp_path, lengths, bos=1):
    """A shard of documents of the given lengths, each with its own token values (no two windows equal)."""
    docs = [list(range(2 + 100 * i, 2 + 100 * i + n)) for i, n in enumerate(lengths)]
    write_shards([pack_documents(docs, bos, np.uint16)], tmp_path, "train", bos_id=bos)
    return TokenShards(tmp_path, "train")


def test_training_rows_are_document_aligned_and_cover_every_document(tmp_path):
    shards = doc_shards(tmp_path, [5, 40, 3, 70, 9])
    tokens = np.asarray(shards.shards[0])
    grid = shards.grid(seq_len=16, bos_id=1)
    bos = np.flatnonzero(tokens == 1)
    for _, start in grid:
        doc_start = bos[bos <= start].max()
        assert (start - doc_start) % 16 == 0 or start == len(tokens) - 17
    covered = np.zeros(len(tokens), bool)
    for _, start in grid:
        covered[start : start + 17] = True
    assert covered.all()


def test_an_epoch_visits_each_window_once_and_rows_depend_only_on_position(tmp_path):
    shards = doc_shards(tmp_path, [30] * 20)
    n = len(shards.grid(16, 1))
    x, _ = shards.batch(seed=7, position=0, batch_size=n, seq_len=16, bos_id=1)
    assert len({tuple(r) for r in x}) == n  # every window once
    x_again, y_again = shards.batch(seed=7, position=5, batch_size=3, seq_len=16, bos_id=1)
    assert (x_again == x[5:8]).all() and (y_again[:, :-1] == x_again[:, 1:]).all()
    next_epoch, _ = shards.batch(seed=7, position=n, batch_size=n, seq_len=16, bos_id=1)
    assert sorted(map(tuple, next_epoch)) == sorted(map(tuple, x))


def test_ddp_ranks_read_disjoint_rows_that_match_one_process():
    one = [row_position(step=3, micro=m, grad_accum=2, batch_size=8) for m in range(2)]
    ranks = [row_position(step=3, micro=m, grad_accum=2, batch_size=4, rank=r, world=2) for m in range(2)
             for r in range(2)]
    assert sorted(ranks) == [p for o in one for p in (o, o + 4)]


def test_corrupt_shard_names_the_file(tmp_path):
    path = tmp_path / "train_000.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="train_000.bin"):
        read_shard(path)
    (tmp_path / "val_000.bin").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="val_000.bin"):
        read_shard(tmp_path / "val_000.bin")


def test_tokenizer_stage_artifacts(micro_run):
    tok = load_tokenizer(micro_run / "tokenizer")
    assert (micro_run / "tokenizer" / "tokenizer.tiktoken").exists()
    assert json.loads((micro_run / "tokenizer" / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    train = TokenShards(micro_run / "tokens", "train")
    assert train.shards[0][0] == tok.bos_id and train.shards[0].max() < tok.vocab_size


def test_tokenizer_show_and_stats(micro_run):
    from conftest import chatforge

    text = "naïve 東京 <|im_start|>"
    out = chatforge("tokenizer", "show", text, "--run", str(micro_run))
    ids = load_tokenizer(micro_run / "tokenizer").encode(text)
    assert text in out.stdout and f"{len(ids)} tokens, {len(text.encode())} bytes" in out.stdout
    assert chatforge("tokenizer", "show", "--run", str(micro_run), text).stdout == out.stdout
    out = chatforge("tokenizer", "stats", "--run", str(micro_run))
    assert "val_bytes_per_token" in out.stdout and "vocab_used_train" in out.stdout


def test_tokenizer_stats_values(micro_run):
    from chatforge.tokenizer.view import stats

    tok = load_tokenizer(micro_run / "tokenizer")
    s = stats(tok, TokenShards(micro_run / "tokens", "train"), TokenShards(micro_run / "tokens", "val"))
    assert 1.5 < s["val_bytes_per_token"] < 4 and 0.5 < s["vocab_used_train"] <= 1
    assert len(s["top_tokens"]) == 10 and s["top_tokens"][0][1] >= s["top_tokens"][-1][1]


def test_shards_from_two_processes_equal_one_process(tok, tmp_path, monkeypatch):
    import chatforge.tokenizer.shards as shards_mod

    monkeypatch.setattr(shards_mod, "CHUNK_BYTES", 3000)  # several chunks, so both workers get some
    tok.save(tmp_path / "tok")
    texts = [c[: 50 + 37 * i] for i in range(40) for c in CORPUS]
    one = encode_to_shards(texts, tmp_path / "tok", tmp_path / "one", "train", workers=1, shard_tokens=5000)
    two = encode_to_shards(iter(texts), tmp_path / "tok", tmp_path / "two", "train", workers=2, shard_tokens=5000)
    assert one == two and one["docs"] == len(texts) and one["shards"] > 1
    assert one["bytes"] == sum(len(t.encode()) for t in texts)
    for a, b in zip(sorted((tmp_path / "one").iterdir()), sorted((tmp_path / "two").iterdir()), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    expected = pack_documents([tok.encode(t) for t in texts], tok.bos_id, np.uint16)
    assert np.concatenate(TokenShards(tmp_path / "one", "train").shards).tolist() == expected.tolist()


@pytest.mark.parametrize("docs, message", [([], "has no documents"), (["tiny text"] * 3, "only supports")])
def test_tokenizer_stage_on_empty_or_tiny_corpus_names_the_directory(tmp_path, docs, message):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from conftest import chatforge

    run = tmp_path / "run"
    chatforge("data", "--preset", "micro", "--run", str(run), "--data.max_docs=20")
    for part in (run / "data" / "train").glob("part-*.parquet"):
        part.unlink()
    pq.write_table(pa.table({"text": pa.array(docs, pa.string())}), run / "data" / "train" / "part-00000.parquet")
    proc = chatforge("tokenizer", "--run", str(run), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and str(run / "data" / "train") in proc.stderr


def test_tokenizer_stage_can_reuse_another_runs_tokenizer(tmp_path, micro_run):
    from conftest import chatforge

    run, src = tmp_path / "run", micro_run / "tokenizer"
    chatforge("data", "--preset", "micro", "--run", str(run), "--data.max_docs=20")
    proc = chatforge("tokenizer", "--run", str(run), f"--tokenizer.from_dir={src}", "--tokenizer.vocab_size=1000",
                     check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--tokenizer.vocab_size=512" in proc.stderr
    chatforge("tokenizer", "--run", str(run), f"--tokenizer.from_dir={src}", "--tokenizer.vocab_size=512")
    assert (run / "tokenizer" / "tokenizer.tiktoken").read_bytes() == (src / "tokenizer.tiktoken").read_bytes()
    first = next(read_parts(run / "data" / "train", ["text"]))["text"]
    assert TokenShards(run / "tokens", "train").shards[0][1:21].tolist() == load_tokenizer(src).encode(first)[:20]


def test_batch_encoding_equals_encode(tok):
    texts = [*TRICKY, *CORPUS, "lone \ud800 surrogate"]
    assert [a.tolist() for a in tok.encode_batch(texts, num_threads=2)] == [tok.encode(t) for t in texts]


def test_missing_chat_token_is_a_clear_error():
    import tiktoken

    ranks = {bytes([b]): b for b in range(256)}
    enc = tiktoken.Encoding(name="bare", pat_str=r"\S+|\s+", mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 256})
    with pytest.raises(ValueError, match="no <\\|im_start\\|> token: chat and tools need"):
        Tokenizer(enc).special("<|im_start|>")


def test_a_new_tokenizer_at_a_used_path_loads_as_itself(tmp_path, monkeypatch):
    # tiktoken's own loader caches files by their path string: the second tokenizer loaded as the first
    monkeypatch.chdir(tmp_path)
    first = train_tokenizer(["the cat sat on the mat, the dog ate the hat " * 50], 276)
    second = train_tokenizer(["zebras quietly juggle xylophones by the lake " * 50], 276)
    for tok in (first, second):
        tok.save(tmp_path / "tok")
        loaded = load_tokenizer("tok")  # a relative path, as runs/NAME/tokenizer is
        text = "zebras juggle on the mat"
        assert loaded.encode(text) == tok.encode(text)
