import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import chatforge
from test_tokenizer_hf import TRICKY, bbc_texts

from chatforge.export.hf import to_hf_model
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.hf import gpt_config, hf_config_dict, load_hf_model
from chatforge.tokenizer.bpe import train_tokenizer
from chatforge.tokenizer.hf import load_hf_tokenizer, save_hf_tokenizer

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def texts():
    return bbc_texts()


@pytest.fixture(scope="module")
def tok(texts):
    return train_tokenizer(texts[:100], 512)  # the micro preset's vocabulary size


def random_model(vocab_size: int, qk_norm: bool = True) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, seq_len=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=1,
                          qk_norm=qk_norm, rope_theta=5000.0, norm_eps=1e-5))
    with torch.no_grad():  # zero-initialised projections would hide a mapping error
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def save_hf_dir(model: GPT, tok, path, **save_kw):
    """The layout of a model on the Hugging Face hub: config.json, safetensors, tokenizer.json."""
    to_hf_model(model, tok.bos_id, tok.bos_id).save_pretrained(path, **save_kw)
    save_hf_tokenizer(tok, path / "tokenizer.json")
    return path


def hf_ids(path, text: str) -> list[int]:
    hf = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    hf.encode_special_tokens = True  # special-looking text stays text, as in chatforge's encode
    return hf.encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("qk_norm", [True, False])
def test_round_trip_same_weights_and_logits(tok, tmp_path, qk_norm):
    model = random_model(tok.vocab_size, qk_norm)
    path = save_hf_dir(model, tok, tmp_path / "hf")
    back = load_hf_model(path, seq_len=64)
    assert back.cfg == dataclasses.replace(model.cfg, mlp_hidden=model.cfg.ffn_dim)
    theirs = back.state_dict()
    assert theirs.keys() == model.state_dict().keys()
    assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    hf = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    x = torch.randint(0, tok.vocab_size, (2, 40))
    with torch.no_grad():
        assert torch.allclose(back(x), hf(x).logits, atol=1e-5)


def test_sharded_checkpoint_loads(tok, tmp_path):
    model = random_model(tok.vocab_size)
    path = save_hf_dir(model, tok, tmp_path / "hf", max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists() and not (path / "model.safetensors").exists()
    back = load_hf_model(path, seq_len=64)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_tied_embeddings_are_untied_and_padding_rows_dropped(tmp_path, capsys):
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   rope_parameters={"rope_type": "default", "rope_theta": 500000.0})
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(cfg).eval()
    hf.save_pretrained(tmp_path / "tied")
    model = load_hf_model(tmp_path / "tied", seq_len=32, vocab_size=280)  # a tokenizer with 280 ids
    assert "unties" in capsys.readouterr().out
    assert model.cfg.vocab_size == 280 and model.cfg.rope_theta == 500000.0 and not model.cfg.qk_norm
    assert torch.equal(model.lm_head.weight, model.embed_tokens.weight)
    assert model.lm_head.weight.data_ptr() != model.embed_tokens.weight.data_ptr()  # trained separately
    x = torch.randint(0, 280, (2, 20))
    with torch.no_grad():
        assert torch.allclose(model(x), hf(x).logits[..., :280], atol=1e-5)


BASE = hf_config_dict(GPTConfig(vocab_size=300, seq_len=64, n_layer=2, n_embd=64, n_head=4, n_kv_head=2))


@pytest.mark.parametrize("change, message", [
    ({"attention_bias": True}, "biases"),
    ({"mlp_bias": True}, "biases"),
    ({"hidden_act": "gelu"}, "activation 'gelu'"),
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}, "RoPE scaling 'yarn'"),
    ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}}, "RoPE scaling 'linear'"),
    ({"use_sliding_window": True}, "sliding-window"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "sliding-window"),
    ({"head_dim": 32}, "head_dim=32 but hidden_size/num_attention_heads = 64/4"),
    ({"model_type": "mistral", "architectures": ["MistralForCausalLM"]}, "only qwen3 and llama"),
    ({"max_position_embeddings": 32}, "add --model.seq_len=32"),
])
def test_unsupported_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        gpt_config({**BASE, **change}, seq_len=64)


def test_config_from_architectures_alone():
    hf = {k: v for k, v in BASE.items() if k != "model_type"}
    assert gpt_config(hf, seq_len=64).qk_norm
    hf["architectures"] = ["LlamaForCausalLM"]
    assert not gpt_config(hf, seq_len=64).qk_norm


def test_tokenizer_imports_with_identical_ids(tok, texts, tmp_path):
    path = tmp_path / "hf"
    save_hf_tokenizer(tok, path / "tokenizer.json")
    imported = load_hf_tokenizer(path)
    assert imported.enc._mergeable_ranks == tok.enc._mergeable_ranks
    assert imported.enc._special_tokens == tok.enc._special_tokens and imported.bos_id == tok.bos_id
    for text in TRICKY + texts[100:150]:
        assert imported.encode(text) == hf_ids(path, text) == tok.encode(text), repr(text[:80])


def test_tokenizer_trained_by_hf_tokenizers_gpt2_style(texts, tmp_path):
    """A BPE from another producer: the `tokenizers` trainer, GPT-2's ByteLevel regex, specials first."""
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(texts[:100], trainers.BpeTrainer(
        vocab_size=700, special_tokens=["<|endoftext|>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    (tmp_path / "hf").mkdir()
    hf.save(str(tmp_path / "hf" / "tokenizer.json"))
    imported = load_hf_tokenizer(tmp_path / "hf")
    assert imported.vocab_size == 700 and imported.bos_id == 0 and imported.special("<pad>") == 1
    for text in TRICKY + texts[100:150]:
        assert imported.encode(text) == hf_ids(tmp_path / "hf", text), repr(text[:80])


def test_bos_token_renamed_when_there_is_no_endoftext(tok, tmp_path, capsys):
    # Llama 3 style: <|begin_of_text|> starts documents, config.json names it
    path = tmp_path / "hf"
    save_hf_tokenizer(tok, path / "tokenizer.json")
    d = json.loads((path / "tokenizer.json").read_text())
    for t in d["added_tokens"]:
        t["content"] = t["content"].replace("<|endoftext|>", "<|begin_of_text|>")
    (path / "tokenizer.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="no <\\|endoftext\\|>"):
        load_hf_tokenizer(path)
    (path / "config.json").write_text(json.dumps({"bos_token_id": tok.bos_id}))
    imported = load_hf_tokenizer(path)
    assert imported.bos_id == tok.bos_id and "<|begin_of_text|>" in capsys.readouterr().out


def edit_merges(d):
    d["model"]["merges"][3], d["model"]["merges"][4] = d["model"]["merges"][4], d["model"]["merges"][3]


def drop_byte(d):
    del d["model"]["vocab"]["A"]


@pytest.mark.parametrize("edit, message", [
    (edit_merges, "tiktoken merges in id order"),
    (drop_byte, "lacks 1 of the 256 single bytes"),
    (lambda d: d["model"].update(type="WordPiece"), "only byte-level BPE"),
    (lambda d: d["model"].update(end_of_word_suffix="</w>"), "word suffixes"),
    (lambda d: d.update(pre_tokenizer={"type": "Digits", "individual_digits": True}), "pre-tokenizer Digits"),
    (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer Lowercase"),
    (lambda d: d["model"]["merges"].append("Ġ zzzz"), "not in the vocabulary"),
    (lambda d: d["added_tokens"][-1].update(id=100000), "without gaps"),
])
def test_tokenizer_refusals(tok, tmp_path, edit, message):
    path = tmp_path / "hf"
    save_hf_tokenizer(tok, path / "tokenizer.json")
    d = json.loads((path / "tokenizer.json").read_text())
    edit(d)
    (path / "tokenizer.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message) as e:
        load_hf_tokenizer(path)
    assert str(path / "tokenizer.json") in str(e.value)


@pytest.fixture(scope="module")
def hf_run(tok, tmp_path_factory):
    """A micro run whose tokenizer stage took an HF model directory's tokenizer.json."""
    tmp = tmp_path_factory.mktemp("import")
    model = random_model(tok.vocab_size)  # not the micro preset's shape: the run must take the HF model's
    hf_dir = save_hf_dir(model, tok, tmp / "hf")
    run = tmp / "run"
    chatforge("data", "--preset", "micro", "--run", str(run), "--data.max_docs=40")
    chatforge("tokenizer", "--run", str(run), f"--tokenizer.from_dir={hf_dir}")
    return run, hf_dir, model


def test_continued_pretraining_from_an_hf_model(hf_run, tok):
    from chatforge.pretrain.horizon import resolve_pretrain
    from chatforge.runs import open_run
    from chatforge.tokenizer.bpe import load_tokenizer
    from chatforge.tokenizer.shards import TokenShards, row_position

    run, hf_dir, model = hf_run
    assert load_tokenizer(run / "tokenizer").enc._mergeable_ranks == tok.enc._mergeable_ranks
    chatforge("pretrain", "--run", str(run), f"--pretrain.init_from={hf_dir}", "--pretrain.steps=2",
              "--pretrain.dtype=float32", "--model.seq_len=64")  # the HF model's context, below micro's
    first = json.loads((run / "metrics" / "pretrain.jsonl").read_text().splitlines()[0])["loss"]

    cfg = open_run(run, save=False).config
    assert cfg.model == dataclasses.replace(model.cfg, mlp_hidden=model.cfg.ffn_dim)
    pc, seq_len = cfg.pretrain, cfg.model.seq_len
    grad_accum = resolve_pretrain(pc, cfg.model, 1).grad_accum
    x, y = TokenShards(run / "tokens", "train").batch(
        pc.seed, row_position(0, 0, grad_accum, pc.batch_size), pc.batch_size, seq_len, tok.bos_id)
    hf = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        logits = hf(torch.from_numpy(x)).logits
    hf_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), torch.from_numpy(y).reshape(-1), ignore_index=-1)
    assert abs(first - hf_loss.item()) < 1e-3


def test_init_from_hf_refuses_another_tokenizer(hf_run, texts, tmp_path):
    from chatforge.pretrain.train import initial_model
    from chatforge.runs import open_run
    from chatforge.tokenizer.bpe import load_tokenizer

    run, _, _ = hf_run
    other = train_tokenizer(texts[200:300], 512)
    other_dir = save_hf_dir(random_model(512), other, tmp_path / "other")
    opened = open_run(run, overrides={"pretrain.init_from": str(other_dir)}, save=False)
    with pytest.raises(ValueError, match=f"--tokenizer.from_dir={other_dir} --tokenizer.vocab_size=512 --force"):
        initial_model(opened, load_tokenizer(run / "tokenizer"), "cpu")


def test_import_then_export_round_trip_bit_for_bit(micro_run, tmp_path):
    """A run's export imports as a new run whose checkpoint and re-export are the same bits, and SFT continues."""
    from safetensors.torch import load_file

    from chatforge.runs import checkpoints, open_run
    from chatforge.tokenizer.bpe import load_tokenizer

    last = checkpoints(micro_run)[-1]  # the speedrun exported its most trained checkpoint
    exported = micro_run / "export" / f"hf-{last}"
    run = tmp_path / "imported"
    chatforge("import", "hf", str(exported), "--run", str(run), "--preset", "micro")  # micro: SFT settings for a test
    theirs, ours = load_file(run / "base" / "model.safetensors"), load_file(micro_run / last / "model.safetensors")
    assert theirs.keys() == ours.keys() and all(torch.equal(v, theirs[k]) for k, v in ours.items())
    cfg = GPTConfig(**json.loads((micro_run / last / "config.json").read_text()))
    cfg = dataclasses.replace(cfg, mlp_hidden=cfg.ffn_dim)  # the width written out, not derived
    assert GPTConfig(**json.loads((run / "base" / "config.json").read_text())) == cfg
    tok, orig = load_tokenizer(run / "tokenizer"), load_tokenizer(micro_run / "tokenizer")
    assert tok.enc._mergeable_ranks == orig.enc._mergeable_ranks and tok.enc._special_tokens == orig.enc._special_tokens
    opened = open_run(run, save=False)
    assert opened.config.model == cfg
    assert opened.stage_info("pretrain")["metrics"]["imported_from"] == str(exported.resolve())

    chatforge("export", "hf", "--run", str(run), "--stage", "base")
    again = load_file(run / "export" / "hf-base" / "model.safetensors")
    first = load_file(exported / "model.safetensors")
    assert again.keys() == first.keys() and all(torch.equal(v, again[k]) for k, v in first.items())
    assert (run / "export" / "hf-base" / "tokenizer.json").read_text() == (exported / "tokenizer.json").read_text()

    chatforge("sft", "--run", str(run), "--sft.steps=2", "--sft.ckpt_every=2")
    assert (run / "sft" / "model.safetensors").exists()

    proc = chatforge("import", "hf", str(exported), "--run", str(run), check=False)
    assert proc.returncode == 2 and "import into a new --run directory" in proc.stderr
    proc = chatforge("import", "hf", str(tmp_path), "--run", str(tmp_path / "other"), check=False)
    assert proc.returncode == 2 and "no config.json" in proc.stderr
