"""Our checkpoints as GGUF files for llama.cpp, LM Studio and Ollama (the `gguf` package writes the format), with an
Ollama Modelfile beside them.

The model is a Llama or a Qwen3 (QK-norm) by llama.cpp's names, which the gguf package maps from the transformers
names of model/hf.py. llama.cpp's Llama rotates adjacent pairs of each head's query and key dimensions where HF's
(and ours) rotates its two halves, so a Llama's q and k rows are reordered into pairs; its Qwen3 rotates halves.
The tokenizer is the byte-level BPE of tokenizer.json (same ids, merges and byte alphabet) under llama.cpp's
`llama-bpe` pre-tokenizer: Llama 3's split, which is ours up to possessive quantifiers that change no split
(tests/test_export_gguf.py encodes text both ways); an imported tokenizer gets the one of its own split.
"""

from pathlib import Path

import gguf
import numpy as np
import torch

from chatforge.errors import UserError
from chatforge.export.hf import eos_token, has_chat_tokens, to_hf_state_dict
from chatforge.export.templates import OLLAMA_TEMPLATE, plain_template
from chatforge.model.gpt import GPT
from chatforge.tokenizer.bpe import SPLIT_PATTERN, Tokenizer
from chatforge.tokenizer.hf import GPT2_PATTERN, hf_tokenizer_json

GGUF_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's pre-tokenizers by the split regex they implement: ours, and those of tokenizers `import hf` takes
PRE_TOKENIZERS = {
    SPLIT_PATTERN: "llama-bpe",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+""": "llama-bpe",  # Llama 3's
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+""": "qwen2",  # Qwen2's and Qwen3's
    GPT2_PATTERN: "gpt2",
}
Q8_BLOCK = 32  # q8_0 stores a row in blocks of 32 values with one scale each
F16_MAX = 65504.0


def pair_rotary_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """A q or k projection's rows from rotate-half order (dims i and i + D/2 rotate together) to llama.cpp's
    adjacent pairs (2i and 2i + 1), head by head."""
    out, inp = w.shape
    return w.view(n_heads, 2, out // n_heads // 2, inp).transpose(1, 2).reshape(out, inp)


def gguf_tensors(model: GPT, gguf_type: str) -> dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]:
    """{llama.cpp name: (data, GGML type)}: vectors (the norms) in f32 as llama.cpp expects, matrices in
    `gguf_type`. Refuses what the type cannot hold instead of writing a file that computes something else."""
    cfg = model.cfg
    arch = gguf.MODEL_ARCH.QWEN3 if cfg.qk_norm else gguf.MODEL_ARCH.LLAMA
    names = gguf.get_tensor_name_map(arch, cfg.n_layer)
    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[gguf_type]
    out = {}
    for hf_name, w in to_hf_state_dict(model).items():
        w = w.detach().float().cpu()
        if not cfg.qk_norm and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            w = pair_rotary_rows(w, cfg.n_head if "q_proj" in hf_name else cfg.n_kv_head)
        name = names.get_name(hf_name, try_suffixes=(".weight",))
        assert name is not None, f"no llama.cpp name for {hf_name}"
        data = w.numpy()
        if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
            out[name] = (data, gguf.GGMLQuantizationType.F32)
            continue
        if gguf_type == "f16" and np.abs(data).max() > F16_MAX:
            raise UserError(f"{hf_name} has weights beyond float16's range (|w| up to {np.abs(data).max():.3g}); "
                            f"export with --type f32")
        if gguf_type == "q8_0" and data.shape[-1] % Q8_BLOCK:
            raise UserError(f"q8_0 quantizes rows in blocks of {Q8_BLOCK} values and {hf_name} has rows of "
                            f"{data.shape[-1]}; export with --type f16 or --type f32")
        out[name] = (gguf.quants.quantize(data, qtype), qtype)
    return out


def write_gguf(model: GPT, tok: Tokenizer, path: Path, gguf_type: str, chat: bool, name: str) -> Path:
    """One GGUF file: architecture metadata, the tensors in `gguf_type`, the tokenizer (BOS added to every prompt,
    special tokens as control tokens) and, where the tokenizer has the chat tokens, the chat template."""
    if gguf_type not in GGUF_TYPES:
        raise UserError(f"GGUF type {gguf_type!r}: choose --type from {', '.join(GGUF_TYPES)}")
    pre = PRE_TOKENIZERS.get(tok.enc._pat_str)
    if pre is None:
        raise UserError(f"the tokenizer splits text by {tok.enc._pat_str!r}, which no llama.cpp pre-tokenizer "
                        f"implements; export it with `chatforge export hf` instead")
    cfg = model.cfg
    tensors = gguf_tensors(model, gguf_type)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "qwen3" if cfg.qk_norm else "llama")
    writer.add_name(name)
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[gguf_type])
    writer.add_context_length(cfg.seq_len)
    writer.add_embedding_length(cfg.n_embd)
    writer.add_block_count(cfg.n_layer)
    writer.add_feed_forward_length(cfg.ffn_dim)
    writer.add_head_count(cfg.n_head)
    writer.add_head_count_kv(cfg.n_kv_head)
    writer.add_key_length(cfg.head_dim)
    writer.add_value_length(cfg.head_dim)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)

    hf_tok = hf_tokenizer_json(tok)
    tokens = [""] * tok.vocab_size
    types = [gguf.TokenType.NORMAL] * tok.vocab_size
    for text, i in hf_tok["model"]["vocab"].items():
        tokens[i] = text
    for t in hf_tok["added_tokens"]:
        tokens[t["id"]], types[t["id"]] = t["content"], gguf.TokenType.CONTROL
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(hf_tok["model"]["merges"])
    writer.add_bos_token_id(tok.bos_id)
    writer.add_eos_token_id(tok.enc.encode_single_token(eos_token(tok, chat)))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if has_chat_tokens(tok):
        writer.add_eot_token_id(tok.special("<|im_end|>"))
        writer.add_chat_template(plain_template())

    for tensor_name, (data, qtype) in tensors.items():
        writer.add_tensor(tensor_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_modelfile(gguf_path: Path, chat: bool) -> Path:
    """An Ollama Modelfile beside the GGUF (`ollama create NAME -f Modelfile`): chatforge's turns in Ollama's
    template syntax for a chat model, the bare prompt for a base model."""
    template = OLLAMA_TEMPLATE if chat else "{{ .Prompt }}"
    stops = ["<|im_end|>", "<|endoftext|>"] if chat else ["<|endoftext|>"]
    text = f'FROM ./{gguf_path.name}\nTEMPLATE """{template}"""\n' + "".join(f'PARAMETER stop "{s}"\n' for s in stops)
    path = gguf_path.with_name(gguf_path.stem + ".Modelfile")
    path.write_text(text)
    return path
