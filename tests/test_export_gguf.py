from unittest import mock

import pytest
import tiktoken
import torch
from test_export_hf import CONVERSATIONS, random_model
from test_tokenizer_hf import TRICKY, bbc_texts

from chatforge.errors import UserError
from chatforge.export.gguf import pair_rotary_rows, write_gguf, write_modelfile
from chatforge.model.gpt import GPT, GPTConfig, apply_rope, rope_tables
from chatforge.tokenizer.bpe import Tokenizer, train_tokenizer
from chatforge.tokenizer.chat import render, render_prompt

gguf = pytest.importorskip("gguf")


def needs_llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python (the dev extra) is not installed")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(bbc_texts()[:100], 512)


@pytest.fixture(scope="module", params=[True, False], ids=["qwen3", "llama"])
def f32_gguf(request, tok, tmp_path_factory):
    model = random_model(tok.vocab_size, request.param)
    return write_gguf(model, tok, tmp_path_factory.mktemp("gguf") / "m-f32.gguf", "f32", True, "test"), model


def llama(path, **kw):
    """llama.cpp with a float32 KV cache (its default, f16, moves logits by ~5e-3) and its plain CPU kernels: on an
    AMX CPU its repacking of quantized weights segfaults in ggml_backend_amx_mul_mat (ggml-org/llama.cpp#20824; our
    q8_0 file on a 2-core Xeon), and `Llama` has no argument to turn that off."""
    llama_cpp = needs_llama_cpp()
    defaults = llama_cpp.llama_cpp.llama_model_default_params

    def no_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    with mock.patch.object(llama_cpp.llama_cpp, "llama_model_default_params", no_repacking):
        return llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, n_batch=64, verbose=False, seed=0,
                               type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, **kw)


def test_pair_rotary_rows_turns_rotate_half_into_adjacent_pairs():
    """llama.cpp's Llama rotates dims (2i, 2i+1); ours (2i's partner is i + D/2). Rotating the reordered rows'
    output in pairs gives the reordered output of rotating halves."""
    cfg = GPTConfig(vocab_size=10, n_embd=64, n_head=4, n_kv_head=4)
    H, D = cfg.n_head, cfg.head_dim
    torch.manual_seed(0)
    w, x = torch.randn(H * D, cfg.n_embd), torch.randn(5, cfg.n_embd)
    cos, sin = rope_tables(cfg, 5)
    ours = apply_rope((x @ w.t()).view(5, H, D).transpose(0, 1), cos, sin)  # (H, T, D)
    theirs = (x @ pair_rotary_rows(w, H).t()).view(5, H, D).transpose(0, 1)
    angle = torch.outer(torch.arange(5).float(), 1.0 / cfg.rope_theta ** (torch.arange(0, D, 2).float() / D))
    a, b = theirs[..., 0::2], theirs[..., 1::2]
    rotated = torch.stack([a * angle.cos() - b * angle.sin(), a * angle.sin() + b * angle.cos()], -1).flatten(-2)
    assert torch.allclose(pair_rotary_rows(ours.transpose(0, 1).reshape(5, H * D).t(), H).t().reshape(5, H, D)
                          .transpose(0, 1), rotated, atol=1e-5)


def test_metadata(f32_gguf, tok):
    path, model = f32_gguf
    reader = gguf.GGUFReader(path)
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    arch = "qwen3" if model.cfg.qk_norm else "llama"
    assert field("general.architecture") == arch and field(f"{arch}.block_count") == 2
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "llama-bpe"
    assert field("tokenizer.ggml.bos_token_id") == tok.bos_id and field("tokenizer.ggml.add_bos_token") is True
    assert field("tokenizer.ggml.eos_token_id") == tok.special("<|im_end|>")
    types = field("tokenizer.ggml.token_type")
    specials = set(tok.enc._special_tokens.values())
    assert all((t == gguf.TokenType.CONTROL) == (i in specials) for i, t in enumerate(types))
    assert "{%- generation" not in field("tokenizer.chat_template")
    names = {t.name for t in reader.tensors}
    assert ("blk.1.attn_q_norm.weight" in names) == model.cfg.qk_norm and "output.weight" in names


def test_llama_cpp_greedy_continuation_equals_ours(f32_gguf, tok):
    path, model = f32_gguf
    llm = llama(path, logits_all=True)
    text = "The government said on Monday"
    prompt = llm.tokenize(text.encode(), add_bos=True, special=False)
    assert prompt == [tok.bos_id, *tok.encode(text)]
    llm.eval(prompt)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0]
    assert (torch.from_numpy(llm.scores[: len(prompt)]) - ours).abs().max() < 1e-4  # measured 6e-6 to 9e-6
    llm.reset()
    theirs = []
    for t in llm.generate(prompt, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        theirs.append(t)
        if len(theirs) == 32:
            break
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(32):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert theirs == seq[len(prompt):]


def test_llama_cpp_tokenizes_like_chatforge(f32_gguf, tok):
    """llama.cpp's `llama-bpe` split is Llama 3's regex; ours differs only by possessive quantifiers, which change
    no split: the same ids on tricky strings and news text. Special-looking text stays text."""
    llm = llama(f32_gguf[0], vocab_only=True)
    for text in TRICKY + bbc_texts()[100:130]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text), repr(text[:80])


def test_embedded_template_is_plain_jinja_rendering_like_chatforge(f32_gguf, tok):
    """The template as llama.cpp's runtimes get it, rendered by plain jinja2 (no transformers extensions)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    field = gguf.GGUFReader(f32_gguf[0]).fields["tokenizer.chat_template"].contents()
    template = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(field)
    conv = CONVERSATIONS[0]
    for n in range(1, len(conv) + 1):
        text = template.render(messages=conv[:n], bos_token="<|endoftext|>", add_generation_prompt=True)
        assert tok.enc.encode(text, allowed_special="all") == render_prompt(tok, conv[:n]), n


@pytest.mark.parametrize("conv", CONVERSATIONS[:1])
def test_embedded_template_renders_like_chatforge(f32_gguf, tok, conv):
    needs_llama_cpp()
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    path, _ = f32_gguf
    llm = llama(path, vocab_only=True)
    template = llm.metadata["tokenizer.chat_template"]
    for n in range(1, len(conv) + 1):
        prompt = Jinja2ChatFormatter(template, "<|im_end|>", "<|endoftext|>")(messages=conv[:n]).prompt
        assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == render_prompt(tok, conv[:n]), n
    full = Jinja2ChatFormatter(template, "<|im_end|>", "<|endoftext|>", add_generation_prompt=False)(messages=conv)
    assert llm.tokenize(full.prompt.encode(), add_bos=False, special=True) == render(tok, conv)[0]


def test_q8_0_loads_and_produces_text(tok, tmp_path):
    model = random_model(tok.vocab_size, True)
    path = write_gguf(model, tok, tmp_path / "m-q8_0.gguf", "q8_0", False, "test")
    assert path.stat().st_size < 0.4 * write_gguf(model, tok, tmp_path / "m-f32.gguf", "f32", False, "t").stat().st_size
    llm = llama(path)
    out = llm.create_completion("The market", max_tokens=8, temperature=0.0)
    assert out["usage"]["completion_tokens"] > 0 and out["choices"][0]["text"]


def test_unrepresentable_checkpoints_are_refused(tok, tmp_path):
    torch.manual_seed(0)
    odd = GPT(GPTConfig(vocab_size=tok.vocab_size, seq_len=32, n_layer=1, n_embd=48, n_head=2, n_kv_head=2))
    with pytest.raises(UserError, match="q8_0 quantizes rows in blocks of 32 .* --type f16 or --type f32"):
        write_gguf(odd, tok, tmp_path / "odd.gguf", "q8_0", False, "t")
    big = random_model(tok.vocab_size, True)
    with torch.no_grad():
        big.lm_head.weight[0, 0] = 1e5
    with pytest.raises(UserError, match="float16's range.*--type f32"):
        write_gguf(big, tok, tmp_path / "big.gguf", "f16", False, "t")
    other = Tokenizer(tiktoken.Encoding("words", pat_str=r"\S+|\s+", mergeable_ranks=tok.enc._mergeable_ranks,
                                        special_tokens=tok.enc._special_tokens))
    with pytest.raises(UserError, match="no llama.cpp pre-tokenizer implements; export it with `chatforge export hf`"):
        write_gguf(big, other, tmp_path / "words.gguf", "f32", False, "t")
    assert not any(tmp_path.iterdir())


def test_modelfile(tmp_path):
    path = tmp_path / "sft-f32.gguf"
    text = write_modelfile(path, chat=True).read_text()
    assert text.startswith("FROM ./sft-f32.gguf\n") and 'PARAMETER stop "<|im_end|>"' in text
    assert "<|im_start|>{{ .Role }}<|im_sep|>{{ .Content }}<|im_end|>" in text
    assert "{{ .Prompt }}" in write_modelfile(tmp_path / "base-f32.gguf", chat=False).read_text()
