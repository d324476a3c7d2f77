"""Our checkpoints as HF transformers models: Qwen3ForCausalLM (with QK-norm) or LlamaForCausalLM.

The names and config fields map in model/hf.py, shared with the import direction. Logits match ours
(tests/test_export_hf.py).
"""

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.hf import hf_config_dict, hf_name


def to_hf_config(cfg: GPTConfig, bos_id: int | None = None, eos_id: int | None = None):
    """The matching transformers config: Qwen3Config when the model uses QK-norm, else LlamaConfig."""
    from transformers import AutoConfig

    return AutoConfig.for_model(**hf_config_dict(cfg, bos_id, eos_id))


def to_hf_state_dict(model: GPT) -> dict:
    return {hf_name(k): v for k, v in model.state_dict().items()}


def to_hf_model(model: GPT, bos_id: int | None = None, eos_id: int | None = None):
    """A transformers model with our weights (float32, eval mode)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(to_hf_config(model.cfg, bos_id, eos_id))
    hf.load_state_dict(to_hf_state_dict(model), strict=True)
    return hf.eval()
