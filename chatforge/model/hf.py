"""Our GPT <-> Hugging Face Qwen3 / Llama checkpoints: the one place that knows how the two name things.

The model was built inside that family (model/gpt.py), so the mapping is names only: HF nests the decoder
under `model.` and keeps `lm_head` outside it; QK-norm is what makes a Llama a Qwen3. Importing refuses what
gpt.py cannot represent (biases, scaled RoPE, other activations, sliding windows, a free head_dim) rather
than load weights that would compute something else. Export (export/hf.py) and continued pretraining from
an HF model (pretrain/train.py) both build on this module.
"""

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from chatforge.errors import UserError
from chatforge.model.gpt import GPT, HIDDEN_ACT, GPTConfig

ARCHITECTURES = {"Qwen3ForCausalLM": "qwen3", "LlamaForCausalLM": "llama"}


def hf_config_dict(cfg: GPTConfig, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """config.json fields of the matching transformers model: Qwen3 when the model uses QK-norm, else Llama."""
    model_type = "qwen3" if cfg.qk_norm else "llama"
    d = dict(model_type=model_type, architectures=[a for a, t in ARCHITECTURES.items() if t == model_type],
             vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_dim,
             num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
             head_dim=cfg.head_dim, max_position_embeddings=cfg.seq_len, rms_norm_eps=cfg.norm_eps,
             rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, tie_word_embeddings=False,
             attention_bias=False, hidden_act=HIDDEN_ACT, bos_token_id=bos_id, eos_token_id=eos_id)
    if model_type == "llama":
        d["mlp_bias"] = False
    return d


def hf_name(name: str) -> str:
    return name if name.startswith("lm_head.") else f"model.{name}"


def gpt_name(name: str) -> str:
    return name.removeprefix("model.")


def is_hf_checkpoint(path: Path) -> bool:
    """A transformers model directory: its config.json names a model type (ours holds GPTConfig's fields)."""
    config = Path(path) / "config.json"
    if not config.exists():
        return False
    d = json.loads(config.read_text())
    return "model_type" in d or "architectures" in d


def gpt_config(hf: dict, seq_len: int) -> GPTConfig:
    """GPTConfig for an HF config.json, or a UserError naming what gpt.py cannot represent.

    seq_len is the context the run trains at, not the model's max_position_embeddings (32k-128k for current
    models): training rows, the RoPE table and the export all follow it, and gpt.py extends RoPE past it at
    inference. It may not exceed max_position_embeddings, positions the model never saw."""
    model_type = hf.get("model_type") or next((ARCHITECTURES[a] for a in hf.get("architectures") or []
                                               if a in ARCHITECTURES), None)
    if model_type not in ("qwen3", "llama"):
        found = hf.get("model_type") or hf.get("architectures")
        raise UserError(f"model type {found!r}: only qwen3 and llama models import")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise UserError("the model has attention or MLP biases, which chatforge's model does not")
    if hf.get("hidden_act", "silu") != HIDDEN_ACT:
        raise UserError(f"activation {hf['hidden_act']!r}: chatforge's MLP gate is {HIDDEN_ACT}")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise UserError(f"RoPE scaling {rope_type!r}: chatforge's model has plain RoPE only")
    if hf.get("use_sliding_window") or any(t != "full_attention" for t in hf.get("layer_types") or []):
        raise UserError("the model uses sliding-window attention; chatforge's attends to the whole context")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or n_embd // n_head
    if head_dim * n_head != n_embd:
        raise UserError(f"head_dim={head_dim} but hidden_size/num_attention_heads = {n_embd}/{n_head}: "
                        f"chatforge's model needs them equal")
    max_pos = hf.get("max_position_embeddings", seq_len)
    if seq_len > max_pos:
        raise UserError(f"model.seq_len={seq_len} is longer than the model's max_position_embeddings={max_pos}; "
                        f"add --model.seq_len={max_pos}")
    return GPTConfig(vocab_size=hf["vocab_size"], seq_len=seq_len, n_layer=hf["num_hidden_layers"], n_embd=n_embd,
                     n_head=n_head, n_kv_head=hf.get("num_key_value_heads") or n_head,
                     mlp_hidden=hf["intermediate_size"], rope_theta=float(rope.get("rope_theta", hf.get(
                         "rope_theta", 10000.0))), qk_norm=model_type == "qwen3", norm_eps=hf.get("rms_norm_eps", 1e-6))


def load_hf_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of model.safetensors, or of the shards model.safetensors.index.json lists, under our names."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        files = [path / "model.safetensors"]
    elif (path / "model.safetensors.index.json").exists():
        weight_map = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
        files = [path / f for f in sorted(set(weight_map.values()))]
    else:
        raise UserError(f"no model.safetensors or model.safetensors.index.json in {path}")
    sd = {}
    for f in files:
        sd.update({gpt_name(k): v.float() for k, v in load_file(f).items()})
    return sd


def load_hf_model(path: Path, seq_len: int, vocab_size: int | None = None) -> GPT:
    """A GPT (float32) with an HF checkpoint's weights. Tied embeddings are untied (lm_head starts as a copy),
    since chatforge trains the two separately. With `vocab_size` (the tokenizer's), embedding rows past it are
    dropped: models pad the vocabulary for GPU-friendly shapes (Qwen3: 151,669 tokens in 151,936 rows), no id
    reaches those rows, and the rest of the pipeline needs rows == tokens."""
    path = Path(path)
    if not (path / "config.json").exists():
        raise UserError(f"no config.json in {path}")
    hf = json.loads((path / "config.json").read_text())
    try:
        cfg = gpt_config(hf, seq_len)
    except ValueError as e:  # GPTConfig's own checks too
        raise UserError(f"{path}: {e}") from None
    sd = load_hf_state_dict(path)
    sd.pop("rotary_emb.inv_freq", None)  # older Llama checkpoints stored the RoPE table
    if hf.get("tie_word_embeddings") or "lm_head.weight" not in sd:
        print(f"{path}: tied embeddings; chatforge unties them (lm_head starts as a copy of embed_tokens)")
        sd["lm_head.weight"] = sd["embed_tokens.weight"].clone()
    if vocab_size is not None and vocab_size != cfg.vocab_size:
        if vocab_size > cfg.vocab_size:
            raise UserError(f"{path}: the tokenizer has {vocab_size} tokens but the model only {cfg.vocab_size} "
                            f"embedding rows")
        print(f"{path}: dropping embedding rows {vocab_size}..{cfg.vocab_size - 1}, past the tokenizer's ids")
        cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
        for k in ("embed_tokens.weight", "lm_head.weight"):
            sd[k] = sd[k][:vocab_size]
    model = GPT(cfg)
    try:
        model.load_state_dict(sd, strict=True, assign=True)  # assign: no second copy of the weights
    except RuntimeError as e:
        raise UserError(f"{path}: the weights do not fit a {hf.get('model_type')} model of this config: "
                        f"{str(e).splitlines()[1].strip()[:300]}") from None
    return model


IMPORTED_STAGES = ("data", "tokenizer", "pretrain")  # what an imported model stands in for


def import_hf(run, hf_dir: Path, seq_len: int | None = None) -> dict:
    """`chatforge import hf`: a Llama/Qwen3 directory (ours from `chatforge export hf`, or another's) as the run's
    tokenizer/ and base/ checkpoint, so `sft` and `rl` continue from it; the stages it stands in for are marked
    done with where it came from. The run trains at `seq_len` (default: the model's max_position_embeddings)."""
    from chatforge.model.checkpoint import save_checkpoint
    from chatforge.runs import now
    from chatforge.tokenizer.hf import load_hf_tokenizer, save_hf_tokenizer

    hf_dir = Path(hf_dir)
    if run.manifest["stages"]:
        raise UserError(f"{run.path} already has stages ({', '.join(run.manifest['stages'])}); import into a new "
                        f"--run directory")
    if not (hf_dir / "config.json").exists():
        raise UserError(f"no config.json in {hf_dir}: give a transformers model directory")
    if not is_hf_checkpoint(hf_dir):
        raise UserError(f"{hf_dir / 'config.json'} names no model type: not a transformers model directory")
    hf = json.loads((hf_dir / "config.json").read_text())
    seq_len = seq_len or hf.get("max_position_embeddings")
    if not seq_len:
        raise UserError(f"{hf_dir / 'config.json'} has no max_position_embeddings; add --model.seq_len=N")
    tok = load_hf_tokenizer(hf_dir)
    model = load_hf_model(hf_dir, seq_len, tok.vocab_size)
    tok.save(run.path / "tokenizer")
    save_hf_tokenizer(tok, run.path / "tokenizer" / "tokenizer.json")
    save_checkpoint(run.path / "base", model)
    run.config.model, run.config.tokenizer.vocab_size = model.cfg, model.cfg.vocab_size
    run.config.sft.max_len = min(run.config.sft.max_len, seq_len)  # SFT rows within the model's context
    metrics = {"imported_from": str(hf_dir.resolve()), "params": model.num_params()}
    for stage in IMPORTED_STAGES:
        run.manifest["stages"][stage] = {"status": "done", "finished": now(), "seconds": 0.0, "metrics": metrics}
    run.save()
    print(f"import: {hf_dir} -> {run.path} ({model.num_params() / 1e6:.2f}M parameters, vocabulary "
          f"{tok.vocab_size}, context {seq_len}); continue with `chatforge sft --run {run.path}`")
    return metrics
