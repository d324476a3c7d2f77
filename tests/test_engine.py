import pytest
import torch

from chatforge.infer.engine import GenStats, generate
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.tokenizer.bpe import train_tokenizer

CFG = GPTConfig(vocab_size=300, seq_len=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(CFG)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return m.eval()


def test_greedy_matches_full_recompute(model):
    prompt = [1, 2, 3]
    out = list(generate(model, prompt, max_new_tokens=10, temperature=0))
    seq = list(prompt)
    for _ in range(10):
        seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[3:]


def test_sampling_is_reproducible_with_a_seed(model):
    a = list(generate(model, [5, 6], 12, temperature=1.0, top_k=20, seed=3))
    b = list(generate(model, [5, 6], 12, temperature=1.0, top_k=20, seed=3))
    assert a == b


def test_top_k_one_is_greedy(model):
    assert list(generate(model, [7], 8, temperature=1.0, top_k=1, seed=0)) == list(generate(model, [7], 8, 0))


def test_stop_ids_end_generation_and_are_not_yielded(model):
    greedy = list(generate(model, [1, 2, 3], 10, temperature=0))
    stop = greedy[4]
    stats = GenStats()
    out = list(generate(model, [1, 2, 3], 10, temperature=0, stop_ids=(stop,), stats=stats))
    assert out == greedy[: greedy.index(stop)] and stats.stop_reason == "stop"
    assert stats.new_tokens == len(out) and stats.prompt_tokens == 3


def test_generation_stops_at_the_context(model):
    stats = GenStats()
    out = list(generate(model, list(range(1, 30)), 100, temperature=0, stats=stats))
    assert len(out) == CFG.seq_len - 29 and stats.stop_reason == "length"


@pytest.mark.parametrize("prompt,kw,msg", [
    ([], {}, "empty"),
    (list(range(40)), {}, "context"),
    ([1], {"temperature": -1.0}, ">= 0"),
])
def test_bad_requests_are_clear_errors(model, prompt, kw, msg):
    with pytest.raises(ValueError, match=msg):
        list(generate(model, prompt, 5, **kw))


def test_stream_text_never_splits_a_character():
    tok = train_tokenizer(["plain ascii text only, the quick brown fox jumps over the lazy dog " * 50], 280)
    text = "東京 🙂 café"
    ids = tok.encode(text)
    assert len(ids) > len(text)  # multi-byte characters really are split across byte tokens
    pieces = list(tok.decode_stream(iter(ids)))
    assert "".join(pieces) == text and all("\ufffd" not in p for p in pieces)
