"""Our checkpoints as HF transformers models: Qwen3ForCausalLM (with QK-norm) or LlamaForCausalLM.

The model was built inside that family (model/gpt.py), so the mapping is names only: HF nests the
decoder under `model.` and keeps `lm_head` outside it. Logits match ours (tests/test_export_hf.py).
"""

from chatforge.model.gpt import GPT, GPTConfig


def to_hf_config(cfg: GPTConfig, bos_id: int | None = None, eos_id: int | None = None):
    """The matching transformers config: Qwen3Config when the model uses QK-norm, else LlamaConfig."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.ffn_dim,
                  num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_kv_head,
                  head_dim=cfg.head_dim, max_position_embeddings=cfg.seq_len, rms_norm_eps=cfg.norm_eps,
                  rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, tie_word_embeddings=False,
                  attention_bias=False, hidden_act="silu", bos_token_id=bos_id, eos_token_id=eos_id)
    if cfg.qk_norm:
        return Qwen3Config(architectures=["Qwen3ForCausalLM"], **common)
    return LlamaConfig(architectures=["LlamaForCausalLM"], mlp_bias=False, **common)


def to_hf_state_dict(model: GPT) -> dict:
    return {(k if k.startswith("lm_head.") else f"model.{k}"): v for k, v in model.state_dict().items()}


def to_hf_model(model: GPT, bos_id: int | None = None, eos_id: int | None = None):
    """A transformers model with our weights (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(to_hf_config(model.cfg, bos_id, eos_id))
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf.eval()
