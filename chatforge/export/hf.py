"""Our checkpoints as HF transformers models: Qwen3ForCausalLM (with QK-norm) or LlamaForCausalLM, in memory
(`to_hf_model`, for tests and benchmarks) or as a model directory that transformers and vLLM load offline
(`write_hf_dir`).

The names and config fields map in model/hf.py, shared with the import direction. Logits match ours
(tests/test_export_hf.py). The directory needs no transformers: config.json, safetensors and the tokenizer files
are written from our own objects.
"""

import json
from pathlib import Path

from safetensors.torch import save_file

from chatforge.export.templates import CHAT_TEMPLATE
from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.hf import hf_config_dict, hf_name
from chatforge.tokenizer.bpe import SPECIAL_TOKENS, Tokenizer
from chatforge.tokenizer.hf import hf_tokenizer_json


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


def has_chat_tokens(tok: Tokenizer) -> bool:
    """Whether the tokenizer has chatforge's chat and tool tokens (one imported from a Llama or Qwen3 lacks some)."""
    return set(SPECIAL_TOKENS) <= tok.enc.special_tokens_set


def eos_token(tok: Tokenizer, chat: bool) -> str:
    """What ends a generation: the end of the assistant's turn for a chat model, of the document for a base model."""
    return "<|im_end|>" if chat and has_chat_tokens(tok) else "<|endoftext|>"


def write_hf_dir(model: GPT, tok: Tokenizer, out: Path, chat: bool, card: str) -> Path:
    """A transformers model directory: config.json, model.safetensors, tokenizer.json and tokenizer_config.json
    (with the chat template where the tokenizer has the chat tokens), generation_config.json and a model card.
    <|endoftext|> starts every tokenized prompt, as in chatforge (the tokenizer's post-processor adds it)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bos, eos = "<|endoftext|>", eos_token(tok, chat)
    bos_id, eos_id = tok.bos_id, tok.enc.encode_single_token(eos)
    config = hf_config_dict(model.cfg, bos_id, eos_id) | {"dtype": "float32"}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in to_hf_state_dict(model).items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    tokenizer = hf_tokenizer_json(tok)
    tokenizer["post_processor"] = {"type": "TemplateProcessing",
                                   "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                              {"Sequence": {"id": "A", "type_id": 0}}],
                                   "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                            {"Sequence": {"id": "A", "type_id": 0}},
                                            {"Sequence": {"id": "B", "type_id": 1}}],
                                   "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n", encoding="utf-8")
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bos, "eos_token": eos,
                  "pad_token": "<|endoftext|>", "add_bos_token": True, "add_eos_token": False,
                  "model_max_length": model.cfg.seq_len, "clean_up_tokenization_spaces": False}
    if has_chat_tokens(tok):
        tok_config["chat_template"] = CHAT_TEMPLATE
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n")
    generation = {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": tok.bos_id}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    (out / "README.md").write_text(card)
    return out
