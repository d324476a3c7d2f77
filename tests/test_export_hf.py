import json

import pytest
import torch
from conftest import chatforge
from test_tokenizer_hf import bbc_texts

from chatforge.export.hf import to_hf_config, to_hf_model, write_hf_dir
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.tokenizer.bpe import train_tokenizer
from chatforge.tokenizer.chat import render, render_prompt

transformers = pytest.importorskip("transformers")


def random_model(vocab_size: int, qk_norm: bool, n_kv_head: int = 2) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, seq_len=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=n_kv_head,
                          qk_norm=qk_norm, rope_theta=5000.0))
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised projections would hide a mapping error
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.mark.parametrize("qk_norm,cls", [(True, "Qwen3ForCausalLM"), (False, "LlamaForCausalLM")])
def test_hf_logits_equal_ours(qk_norm, cls):
    model = random_model(300, qk_norm)
    hf = to_hf_model(model)
    assert type(hf).__name__ == cls and to_hf_config(model.cfg).architectures == [cls]
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x), atol=1e-5)
        out = hf.generate(x[:1, :5], max_new_tokens=8, do_sample=False)
    seq = x[0, :5].tolist()
    with torch.no_grad():
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out[0].tolist() == seq


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(bbc_texts()[:100], 512)


@pytest.fixture(scope="module", params=[True, False], ids=["qwen3", "llama"])
def hf_dir(request, tok, tmp_path_factory):
    model = random_model(tok.vocab_size, request.param)
    return write_hf_dir(model, tok, tmp_path_factory.mktemp("hf") / "out", chat=True, card="# card\n"), model


CONVERSATIONS = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 12 * 7?"},
     {"role": "assistant", "content": [{"type": "think", "text": "use the tool"},
                                       {"type": "python", "text": "12 * 7"}]},
     {"role": "tool", "content": "84"},
     {"role": "assistant", "content": "It is 84."}],
    [{"role": "user", "content": "Find the headline."},
     {"role": "assistant", "content": [{"type": "search", "text": "bbc headline"},
                                       {"type": "output", "text": "Shares rise"},
                                       {"type": "text", "text": "Shares rise."}]},
     {"role": "user", "content": [{"type": "text", "text": "<|im_start|>looks special, is text"}]},
     {"role": "assistant", "content": "OK"}],
]


def test_hf_dir_loads_offline_with_our_logits(hf_dir, tok, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, model = hf_dir
    assert {p.name for p in path.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                                 "tokenizer_config.json", "generation_config.json", "README.md"}
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    assert hf.config.architectures == (["Qwen3ForCausalLM"] if model.cfg.qk_norm else ["LlamaForCausalLM"])
    x = torch.randint(0, tok.vocab_size, (2, 48))
    with torch.no_grad():
        assert (hf(x).logits - model(x)).abs().max() < 1e-4
    assert hf.generation_config.eos_token_id == tok.special("<|im_end|>")
    assert hf.generation_config.bos_token_id == tok.bos_id


def test_hf_tokenizer_adds_bos_and_keeps_our_ids(hf_dir, tok):
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir[0])
    for text in bbc_texts()[100:110]:
        assert hf_tok(text).input_ids == [tok.bos_id, *tok.encode(text)]
    assert hf_tok.eos_token == "<|im_end|>" and hf_tok.bos_token == "<|endoftext|>"


@pytest.mark.parametrize("conv", CONVERSATIONS[:1])
def test_chat_template_ids_and_mask_equal_render(hf_dir, tok, conv):
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir[0])
    ids, mask = render(tok, conv)
    out = hf_tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == ids
    assert out["assistant_masks"] == mask
    for n in range(1, len(conv)):  # every prompt along the way: after the tool message the turn is open
        prompt = hf_tok.apply_chat_template(conv[:n], tokenize=True, add_generation_prompt=True, return_dict=True)
        assert prompt["input_ids"] == render_prompt(tok, conv[:n]), n


def test_chat_template_output_parts_and_text_parts(hf_dir, tok):
    """An inline tool output is not trained; text that looks like a special token is tokenized as one by HF's
    template (the user's text is pasted into the template's string), unlike chatforge's render."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir[0])
    conv = CONVERSATIONS[1]
    ids, mask = render(tok, conv)
    out = hf_tok.apply_chat_template(conv, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    start = tok.special("<|im_start|>")
    assert out["input_ids"].count(start) == ids.count(start) + 1  # HF's one extra <|im_start|> from the user's text
    safe = [conv[0], conv[1]]
    ids, mask = render(tok, safe)
    out = hf_tok.apply_chat_template(safe, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert out["input_ids"] == ids and out["assistant_masks"] == mask


def test_base_model_export_ends_documents(tok, tmp_path):
    path = write_hf_dir(random_model(tok.vocab_size, False), tok, tmp_path / "base", chat=False, card="")
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == tok.bos_id
    assert json.loads((path / "tokenizer_config.json").read_text())["eos_token"] == "<|endoftext|>"


def test_export_stage_in_speedrun_and_cli(micro_run):
    from chatforge.runs import checkpoints, open_run

    run, last = open_run(micro_run, save=False), checkpoints(micro_run)[-1]
    assert run.is_done("export")
    assert run.stage_info("export")["metrics"] == {"stage": last, "hf": f"export/hf-{last}",
                                                   "gguf": f"export/{last}-f32.gguf"}
    card = (micro_run / "export" / f"hf-{last}" / "README.md").read_text()
    assert "| pretrain |" in card and "val_bpb" in card and "Gutenberg" in card and "BBC" in card
    chatforge("export", "hf", "--run", str(micro_run), "--stage", "base")
    config = json.loads((micro_run / "export" / "hf-base" / "config.json").read_text())
    assert config["architectures"] == ["Qwen3ForCausalLM"]  # the micro preset has QK-norm
    for bad, message in ((["onnx"], "unknown export format onnx"), (["gguf", "--type", "q4_0"], "choose --type")):
        proc = chatforge("export", *bad, "--run", str(micro_run), check=False)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
