"""`chatforge`: one command, a subcommand per stage of the pipeline.

Every stage reads and writes one run directory (`--run runs/NAME`). Config fields can be
overridden on any stage command as `--SECTION.FIELD=VALUE`, e.g. `--pretrain.steps=200`.
"""

import argparse
import json
import sys
from pathlib import Path

from chatforge.config import PRESETS, SEARCH_BACKENDS
from chatforge.runs import RunError

OVERRIDES_HELP = ("config overrides: --SECTION.FIELD=VALUE for any field shown by --show-config, "
                  "e.g. --pretrain.steps=200 --model.n_kv_head=2 --sft.identity=Ada")
NOT_BUILT = {
    "rl": "RL/RLHF (GRPO, reward model) is not built yet; `chatforge sft` gives the chat model",
    "serve": "the OpenAI-compatible server and web UI are not built yet; use `chatforge chat`",
    "export": "export to transformers / GGUF is not built yet; checkpoints are safetensors + config.json",
}


def _stages():
    # Imported lazily: `chatforge --help` should not pay for importing torch.
    from chatforge.data.pipeline import build_sample_corpus
    from chatforge.posttrain.sft import sft
    from chatforge.pretrain.train import pretrain
    from chatforge.tokenizer.shards import build_tokenizer_and_shards

    return {"data": build_sample_corpus, "tokenizer": build_tokenizer_and_shards, "pretrain": pretrain, "sft": sft}


def parse_overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, str]:
    out, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            parser.error(f"unrecognized argument: {arg} ({OVERRIDES_HELP})")
        if "=" in arg:
            key, value = arg[2:].split("=", 1)
        elif i + 1 < len(extra):
            key, value = arg[2:], extra[i + 1]
            i += 1
        else:
            parser.error(f"{arg} needs a value")
        out[key] = value
        i += 1
    return out


def open_from_args(args, overrides, save: bool = True):
    from chatforge.runs import open_run

    return open_run(args.run or f"runs/{args.preset or 'tiny'}", args.preset, args.depth, overrides, save)


def cmd_stage(args, overrides) -> None:
    from chatforge.config import to_dict
    from chatforge.runs import STAGES, run_stage

    run = open_from_args(args, overrides, save=not args.show_config)
    if args.show_config:
        print(json.dumps(to_dict(run.config), indent=2))
        return
    stages = _stages()
    for name in STAGES if args.command == "speedrun" else [args.command]:
        for earlier in STAGES[: STAGES.index(name)]:
            run.require(earlier)
        run_stage(run, name, stages[name], force=args.force)
    if args.command == "speedrun":
        from chatforge.report import print_summary, summarize, write_report

        summary = summarize(run)
        print_summary(summary)
        path = write_report(run, summary)
        print(f"\nreport: {path}\nchat with it: chatforge chat --run {run.path}")


def cmd_tokenizer(args, overrides) -> None:
    if args.action is None:
        return cmd_stage(args, overrides)
    from rich.console import Console

    from chatforge.tokenizer.bpe import load_tokenizer
    from chatforge.tokenizer.shards import TokenShards
    from chatforge.tokenizer.view import show, stats

    run = open_from_args(args, overrides, save=False)
    tok = load_tokenizer(run.path / "tokenizer")
    console = Console(highlight=False)
    if args.action == "show":
        if args.text is None:
            raise ValueError("usage: chatforge tokenizer show TEXT")
        coloured, ids = show(tok, args.text)
        console.print(coloured)
        console.print(f"{len(ids)} tokens, {len(args.text.encode())} bytes: {ids}")
        return
    s = stats(tok, TokenShards(run.path / "tokens", "train"), TokenShards(run.path / "tokens", "val"))
    for k, v in s.items():
        console.print(f"{k:>20}: {v}")


def cmd_data(args, overrides) -> None:
    if args.action == "index":
        from chatforge.infer.search import build_index

        run = open_from_args(args, overrides, save=False)
        stats = build_index(run.path / "data", run.path / "index", dense=args.dense)
        dense = " with dense embeddings (hybrid search)" if stats["dense"] else ""
        print(f"index: {stats['passages']} passages from {stats['documents']} documents{dense} -> {run.path / 'index'}")
        return
    if args.action == "inspect":
        from chatforge.data.pipeline import inspect

        run = open_from_args(args, overrides, save=False)
        print(inspect(run.path / "data", samples=args.samples, seed=args.seed))
        return
    # The pipeline options are config fields, so they are recorded in the run's manifest like any override.
    if args.input:
        overrides["data.inputs"] = ",".join(args.input)
    for flag, key in ((args.workers, "data.workers"), (args.executor, "data.executor"),
                      (args.steps, "data.steps")):
        if flag is not None:
            overrides[key] = str(flag)
    if args.keep_dropped:
        overrides["data.keep_dropped"] = "true"
    cmd_stage(args, overrides)


def sampling_params(args):
    from chatforge.infer.engine import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                          top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed, stop=tuple(args.stop or ()))


def cmd_chat(args, overrides) -> None:
    from chatforge.infer.chat import chat_loop, load_chat_model
    from chatforge.infer.engine import Engine
    from chatforge.infer.tools import tools_for_run
    from chatforge.runs import open_run

    run = Path(args.run or "runs/tiny")
    params = sampling_params(args)
    model, tok, stage = load_chat_model(run, args.stage)
    # the run's tools section, then --tools.FIELD=VALUE overrides, then the flags; this session only
    if bad := [k for k in overrides if not k.startswith("tools.")]:
        raise ValueError(f"chat takes only tools.* overrides, not {', '.join(bad)}")
    if args.no_python:
        overrides["tools.python"] = "false"
    if args.search_url:
        overrides |= {"tools.search": "http", "tools.search_url": args.search_url}
    if args.search:
        overrides["tools.search"] = args.search
    tools = tools_for_run(run, open_run(run, overrides=overrides, save=False).config.tools)
    if args.prompt is None:
        enabled = [name for name, on in (("python", tools.python), ("search", tools.search)) if on]
        print(f"chatforge chat: {stage} model from {run}; tools: {', '.join(enabled) or 'none'}")
    chat_loop(Engine(model, tok, max_batch=1, tools=tools, compile=args.compile), args.prompt, args.system, params)


def cmd_generate(args, overrides) -> None:
    from chatforge.infer.chat import complete, load_chat_model
    from chatforge.infer.engine import Engine

    if (args.prompt is None) == (args.file is None):
        raise ValueError("give a prompt or --file PROMPT.txt (one of them)")
    prompt = args.prompt if args.file is None else Path(args.file).read_text()
    if not prompt:
        raise ValueError("the prompt is empty")
    if args.n < 1:
        raise ValueError(f"-n must be >= 1 (got {args.n})")
    params = sampling_params(args)
    model, tok, _ = load_chat_model(Path(args.run or "runs/tiny"), args.stage)
    engine = Engine(model, tok, max_batch=min(args.n, 16), compile=args.compile)
    if args.n == 1:
        complete(engine, prompt, params, out=sys.stdout)
        print()
        return
    for i, text in enumerate(complete(engine, prompt, params, n=args.n)):
        print(f"--- sample {i + 1}\n{prompt}{text}")


def cmd_eval(args, overrides) -> None:
    import torch

    from chatforge.eval.bpb import evaluate_bpb, unigram_bpb
    from chatforge.model.checkpoint import load_model
    from chatforge.tokenizer.bpe import load_tokenizer
    from chatforge.tokenizer.shards import TokenShards

    run = open_from_args(args, overrides)
    run.require("pretrain")
    tok = load_tokenizer(run.path / "tokenizer")
    lengths = torch.tensor(tok.byte_lengths())
    train, val = TokenShards(run.path / "tokens", "train"), TokenShards(run.path / "tokens", "val")
    pc, seq_len = run.config.pretrain, run.config.model.seq_len
    results = {"unigram_bpb": round(unigram_bpb(train, val, lengths.numpy(), seq_len, pc.eval_tokens), 4)}
    for stage in ("base", "sft"):
        if (run.path / stage / "model.safetensors").exists():
            bpb = evaluate_bpb(load_model(run.path / stage), val, lengths, pc.batch_size, pc.eval_tokens)
            results[f"{stage}_bpb"] = round(bpb, 4)
    for k, v in results.items():
        print(f"{k:>12}: {v}")
    (run.path / "metrics").mkdir(exist_ok=True)
    (run.path / "metrics" / "eval.json").write_text(json.dumps(results, indent=2) + "\n")


def cmd_report(args, overrides) -> None:
    from chatforge.report import print_summary, summarize, write_report

    run = open_from_args(args, overrides)
    summary = summarize(run)
    print_summary(summary)
    print(f"report: {write_report(run, summary)}")


def cmd_not_built(args, overrides) -> None:
    print(f"chatforge {args.command}: {NOT_BUILT[args.command]}.", file=sys.stderr)
    sys.exit(2)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=0.6, help="0: greedy")
    p.add_argument("--top-k", type=int, default=50, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1: off")
    p.add_argument("--min-p", type=float, default=0.0, help="drop tokens below MIN_P x the top probability; 0: off")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="1: off")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop before this text (repeatable)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step: ~1.7x tokens/s after ~10-20 s of compiling")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatforge", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run_opts = argparse.ArgumentParser(add_help=False)
    run_opts.add_argument("--run", help="run directory (default: runs/PRESET)")
    run_opts.add_argument("--preset", choices=list(PRESETS), help="size preset for a new run (default: tiny)")
    run_opts.add_argument("--depth", type=int, help="the model's depth dial (width = 64 x depth)")
    stage_opts = argparse.ArgumentParser(add_help=False, parents=[run_opts])
    stage_opts.add_argument("--force", action="store_true", help="redo the stage even if it finished")
    stage_opts.add_argument("--show-config", action="store_true", help="print the resolved config and exit")

    helps = {
        "data": "web crawl (WARC/WET/HTML/JSONL/parquet/text) or the sample corpus -> clean, deduplicated "
                "parquet documents (data/)",
        "tokenizer": "train BPE on the documents and write token shards (tokenizer/, tokens/)",
        "pretrain": "pretrain the base model on the token shards (base/)",
        "sft": "fine-tune the base model into a chat model (sft/)",
        "speedrun": "run every stage in order, then print the summary and write the report",
    }
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text, parents=[stage_opts], epilog=OVERRIDES_HELP)
        p.set_defaults(fn=cmd_stage)
        if name == "data":
            p.add_argument("action", nargs="?", choices=["inspect", "index"],
                           help="inspect: the funnel per step and random kept/dropped documents; index: a BM25 "
                                "index of the documents for the search tool (index/) (without an action: run "
                                "the stage)")
            p.add_argument("--input", action="append", metavar="PATH",
                           help="WARC/WET/HTML/JSONL/parquet/text files, directories or globs (repeatable; "
                                "default: the sample corpus)")
            p.add_argument("--workers", type=int, help="worker processes (data.workers)")
            p.add_argument("--executor", choices=["local", "ray"], help="local processes or Ray Data")
            p.add_argument("--steps", help="comma-separated steps, e.g. url,extract,language,dedup,pii")
            p.add_argument("--keep-dropped", action="store_true",
                           help="also keep dropped documents with their reason, for `data inspect`")
            p.add_argument("--samples", type=int, default=3, help="inspect: random documents to show")
            p.add_argument("--seed", type=int, default=0, help="inspect: which random documents")
            p.add_argument("--dense", action="store_true",
                           help="index: also embed every passage for hybrid search (the `dense` extra)")
            p.set_defaults(fn=cmd_data)
        if name == "tokenizer":
            p.add_argument("action", nargs="?", choices=["show", "stats"],
                           help="show TEXT: colour its tokens; stats: compression and vocabulary use "
                                "(without an action: run the stage)")
            p.add_argument("text", nargs="?", help="the text for `show`")
            p.set_defaults(fn=cmd_tokenizer)

    p = sub.add_parser("chat", help="chat with a trained model in the terminal",
                       description="Chat with the run's SFT model (or base model) in the terminal.")
    p.add_argument("--run", help="run directory (default: runs/tiny)")
    p.add_argument("--stage", choices=["auto", "sft", "base"], default="auto",
                   help="which checkpoint (auto: sft if present, else base)")
    p.add_argument("-p", "--prompt", help="ask one question, print the answer and exit")
    p.add_argument("--system", help="system prompt")
    add_sampling_args(p)
    p.add_argument("--no-python", action="store_true", help="turn the python tool off")
    p.add_argument("--search-url", help="search through a SearXNG-style JSON API instead of the run's index/")
    p.add_argument("--search", choices=SEARCH_BACKENDS,
                   help="search backend (tools.search; auto: the run's index, hybrid if it has dense embeddings)")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("generate", help="complete a text with the base model",
                       description="Base-model completion: continue PROMPT (or a few-shot prompt from --file).")
    p.add_argument("prompt", nargs="?", help="the text to continue")
    p.add_argument("--file", help="read the prompt from this file")
    p.add_argument("--run", help="run directory (default: runs/tiny)")
    p.add_argument("--stage", choices=["base", "sft"], default="base", help="which checkpoint")
    p.add_argument("-n", type=int, default=1, help="samples, generated as one batch")
    add_sampling_args(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser("eval", help="val bits per byte of the base and SFT models vs the unigram baseline",
                       description="Val bits per byte of the run's models vs the unigram baseline.",
                       parents=[run_opts])
    p.set_defaults(fn=cmd_eval)
    p = sub.add_parser("report", help="write report/report.md and loss plots for a run",
                       description="Summarise a run: stage timings, bpb, samples; writes report/.",
                       parents=[run_opts])
    p.set_defaults(fn=cmd_report)
    for name, text in NOT_BUILT.items():
        p = sub.add_parser(name, help=f"(not built yet) {text.split(';')[0]}", description=text + ".")
        p.set_defaults(fn=cmd_not_built)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "action", None) == "show" and args.text is None and extra and not extra[0].startswith("-"):
        args.text = extra.pop(0)  # `tokenizer show --run R TEXT`: argparse takes positionals only in one group
    overrides = parse_overrides(extra, parser)
    if overrides and args.fn in (cmd_generate, cmd_not_built):
        parser.error(f"{args.command} takes no config overrides")
    try:
        args.fn(args, overrides)
    except (RunError, ValueError, FileNotFoundError, FloatingPointError) as e:
        print(f"chatforge {args.command}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"\nchatforge {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
