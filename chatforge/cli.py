"""`chatforge`: one command, a subcommand per stage of the pipeline (chatforge.runs.STAGES), `speedrun` for
all of them, and `chat`, `generate` and `serve` to use what they made.

Every stage reads and writes one run directory (`--run runs/NAME`). Config fields can be
overridden on any stage command as `--SECTION.FIELD=VALUE`, e.g. `--pretrain.steps=200`.
A UserError (bad input, a missing stage, a bad option) prints one line and exits 2; anything
else is a bug and keeps its traceback.
"""

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from chatforge.config import PRESETS, SEARCH_BACKENDS, Config, to_dict
from chatforge.errors import UserError
from chatforge.runs import CHECKPOINTS, STAGES, open_run, run_stage

OVERRIDES_HELP = ("config overrides: --SECTION.FIELD=VALUE for any field shown by --show-config, "
                  "e.g. --pretrain.steps=200 --model.n_kv_head=2 --sft.identity=Ada")


def settings_help(section: str | None) -> str:
    if section is None:
        return OVERRIDES_HELP
    fields = [f.name for f in dataclasses.fields(getattr(Config(), section))]
    return f"settings: --{section}.FIELD=VALUE, FIELD one of {', '.join(fields)}. {OVERRIDES_HELP}"


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
    return open_run(args.run or f"runs/{args.preset or 'tiny'}", args.preset, args.depth, overrides, save)


def cmd_stage(args, overrides, force: bool = False, **options) -> dict | None:
    """Run the stage named by the command (speedrun: every built stage in order); returns its metrics."""
    run = open_from_args(args, overrides, save=not args.show_config)
    if args.show_config:
        print(json.dumps(to_dict(run.config), indent=2))
        return None
    if args.command != "speedrun":
        return run_stage(run, args.command, force=args.force or force, **options)
    from chatforge.model.precision import pick_device
    from chatforge.speedrun import print_estimate

    print_estimate(run.config, pick_device(), int(os.environ.get("WORLD_SIZE", "1")))
    for stage in STAGES.values():
        run_stage(run, stage.name, force=args.force)
    print(f"chat in the terminal:  chatforge chat --run {run.path}\n"
          f"chat in the browser:   chatforge serve --run {run.path}   then open http://127.0.0.1:8000/ "
          f"(the report card: http://127.0.0.1:8000/report)")
    return None


def cmd_tokenizer(args, overrides) -> None:
    if args.action is None:
        cmd_stage(args, overrides)
        return
    from rich.console import Console

    from chatforge.tokenizer.bpe import load_tokenizer
    from chatforge.tokenizer.shards import TokenShards
    from chatforge.tokenizer.view import show, stats

    run = open_from_args(args, overrides, save=False)
    tok = load_tokenizer(run.path / "tokenizer")
    console = Console(highlight=False)
    if args.action == "show":
        if args.text is None:
            raise UserError("usage: chatforge tokenizer show TEXT")
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

    run = Path(args.run or "runs/tiny")
    params = sampling_params(args)
    model, tok, stage = load_chat_model(run, args.stage)
    # the run's tools section, then --tools.FIELD=VALUE overrides, then the flags; this chat only
    if bad := [k for k in overrides if not k.startswith("tools.")]:
        raise UserError(f"chat takes only tools.* overrides, not {', '.join(bad)}")
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
        raise UserError("give a prompt or --file PROMPT.txt (one of them)")
    if args.file is not None and not Path(args.file).is_file():
        raise UserError(f"no prompt file {args.file}")
    prompt = args.prompt if args.file is None else Path(args.file).read_text()
    if not prompt:
        raise UserError("the prompt is empty")
    if args.n < 1:
        raise UserError(f"-n must be >= 1 (got {args.n})")
    params = sampling_params(args)
    model, tok, _ = load_chat_model(Path(args.run or "runs/tiny"), args.stage)
    engine = Engine(model, tok, max_batch=min(args.n, 16), compile=args.compile)
    if args.n == 1:
        complete(engine, prompt, params, out=sys.stdout)
        print()
        return
    for i, text in enumerate(complete(engine, prompt, params, n=args.n)):
        print(f"--- sample {i + 1}\n{prompt}{text}")


def cmd_serve(args, overrides) -> None:
    from chatforge.serve.app import ServeLimits, serve

    if args.batch < 1 or args.max_waiting < 0:
        raise UserError("--batch must be >= 1 and --max-waiting >= 0")
    serve(Path(args.run or "runs/tiny"), args.host, args.port, args.api_key,
          ServeLimits(max_batch=args.batch, max_waiting=args.max_waiting))


def cmd_eval(args, overrides) -> None:
    for flag, key in ((args.tasks, "eval.lm_eval_tasks"), (args.limit, "eval.lm_eval_limit")):
        if flag is not None:
            overrides[key] = str(flag)
    # naming the kinds or the checkpoint asks for an evaluation now, done or not
    figures = cmd_stage(args, overrides, force=bool(args.kinds) or args.stage is not None,
                        kinds=args.kinds or None, checkpoint=args.stage)
    if args.json and figures is not None:
        if args.kinds == ["chat"]:  # the most trained model's figures at top level
            stage = [s for s in CHECKPOINTS if s in figures["chat"]][-1]
            figures = {"stage": stage, **figures["chat"][stage]}
        print(json.dumps(figures))


def cmd_export(args, overrides) -> None:
    cmd_stage(args, overrides, formats=args.formats or None, checkpoint=args.stage, gguf_type=args.type)


def cmd_import(args, overrides) -> None:
    from chatforge.model.hf import import_hf

    seq_len = overrides.pop("model.seq_len", None)
    if overrides:
        raise UserError(f"import takes only --model.seq_len, not {', '.join(overrides)}")
    import_hf(open_from_args(args, {}), Path(args.path), int(seq_len) if seq_len else None)


# Post-training runs made on demand, outside the pipeline's stages (speedrun does not run them): name -> (function
# "module:function" called as fn(run), help). Each writes its own directory in the run and is redone whole.
ON_DEMAND = {
    "reward": ("chatforge.rl.reward:train_reward",
               "train a reward model (Bradley-Terry) on preference pairs from rl.task and files (reward/)"),
    "dpo": ("chatforge.rl.dpo:dpo", "DPO of the chat model on preference pairs (dpo/)"),
    "distill": ("chatforge.rl.distill:distill",
                "SFT this run's model again on a teacher run's verified answers (distill.teacher; sft/)"),
}


def cmd_on_demand(args, overrides) -> None:
    import importlib

    run = open_from_args(args, overrides, save=not args.show_config)
    if args.show_config:
        print(json.dumps(to_dict(run.config), indent=2))
        return
    run.require("sft")
    module, _, name = ON_DEMAND[args.command][0].partition(":")
    print(json.dumps(getattr(importlib.import_module(module), name)(run)))


def add_checkpoint_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=CHECKPOINTS,
                   help="which checkpoint (default: the most trained one present, rl > probe > sft > base)")


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

    for stage in STAGES.values():
        p = sub.add_parser(stage.name, help=stage.help, description=stage.help, parents=[stage_opts],
                           epilog=settings_help(stage.section))
        p.set_defaults(fn=cmd_stage)
        if stage.name == "data":
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
        if stage.name == "tokenizer":
            p.add_argument("action", nargs="?", choices=["show", "stats"],
                           help="show TEXT: colour its tokens; stats: compression and vocabulary use "
                                "(without an action: run the stage)")
            p.add_argument("text", nargs="?", help="the text for `show`")
            p.set_defaults(fn=cmd_tokenizer)
        if stage.name == "eval":
            p.add_argument("kinds", nargs="*", metavar="KIND",
                           help="bpb, chat, arena, rl, fewshot, regurgitation or lm-eval (default: every kind the run "
                                "supports); naming kinds "
                                "evaluates again even if the stage finished")
            add_checkpoint_arg(p)
            p.add_argument("--json", action="store_true", help="print the figures as one JSON line, last")
            p.add_argument("--tasks", help="lm-eval: comma-separated harness task names or task YAML files")
            p.add_argument("--limit", type=int, help="lm-eval: examples per task (default: all)")
            p.set_defaults(fn=cmd_eval)
        if stage.name == "export":
            p.add_argument("formats", nargs="*", metavar="FORMAT",
                           help="hf (a transformers directory, export/hf-STAGE/) and/or gguf (export/STAGE-TYPE.gguf "
                                "and an Ollama Modelfile); default: both")
            add_checkpoint_arg(p)
            p.add_argument("--type", default="f32", help="GGUF tensor type: f32, f16 or q8_0 (default: f32)")
            p.set_defaults(fn=cmd_export)
    for name, (_, text) in ON_DEMAND.items():
        p = sub.add_parser(name, help=text, description=text, parents=[run_opts], epilog=settings_help(name))
        p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
        p.set_defaults(fn=cmd_on_demand)
    text = f"run every stage in order ({', '.join(STAGES)}); the report ends with a summary"
    p = sub.add_parser("speedrun", help=text, description=text, parents=[stage_opts], epilog=OVERRIDES_HELP)
    p.set_defaults(fn=cmd_stage)

    p = sub.add_parser("chat", help="chat with a trained model in the terminal",
                       description="Chat with the run's most trained model (or --stage) in the terminal.")
    p.add_argument("--run", help="run directory (default: runs/tiny)")
    add_checkpoint_arg(p)
    p.add_argument("-p", "--prompt", help="ask one question, print the answer and exit")
    p.add_argument("--system", help="system prompt")
    add_sampling_args(p)
    p.add_argument("--no-python", action="store_true", help="turn the python tool off")
    p.add_argument("--search-url", help="search through a SearXNG-style JSON API instead of the run's index/")
    p.add_argument("--search", choices=SEARCH_BACKENDS,
                   help="search backend (tools.search; auto: the run's index, hybrid if it has dense embeddings)")
    p.set_defaults(fn=cmd_chat)

    p = sub.add_parser("generate", help="complete a text with a model, as a document",
                       description="Completion: continue PROMPT (or a few-shot prompt from --file) as a document.")
    p.add_argument("prompt", nargs="?", help="the text to continue")
    p.add_argument("--file", help="read the prompt from this file")
    p.add_argument("--run", help="run directory (default: runs/tiny)")
    add_checkpoint_arg(p)
    p.add_argument("-n", type=int, default=1, help="samples, generated as one batch")
    add_sampling_args(p)
    p.set_defaults(fn=cmd_generate)

    text = "turn a transformers model directory (Llama or Qwen3) into a run that sft and rl continue"
    p = sub.add_parser("import", help=text, description=text + " (its tokenizer/ and base/ checkpoint).",
                       parents=[run_opts], epilog="--model.seq_len=N: the context to train at (default: the "
                                                  "model's max_position_embeddings)")
    p.add_argument("format", choices=["hf"], help="hf: a transformers directory (config.json, safetensors, "
                                                  "tokenizer.json)")
    p.add_argument("path", help="the model directory")
    p.set_defaults(fn=cmd_import)

    text = "serve the run's models over the OpenAI API, with the chat page at /"
    p = sub.add_parser("serve", help=text, description=text + " (the most trained model first; `model` picks one).")
    p.add_argument("--run", help="run directory (default: runs/tiny)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require `Authorization: Bearer KEY` on /v1/")
    p.add_argument("--batch", type=int, default=32, help="cache rows per model: requests decoded together")
    p.add_argument("--max-waiting", type=int, default=64, help="requests queued for a row before a 429")
    p.set_defaults(fn=cmd_serve)
    return parser


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict[str, str]]:
    """The command line as (args, config overrides)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "action", None) == "show" and args.text is None and extra and not extra[0].startswith("-"):
        args.text = extra.pop(0)  # `tokenizer show --run R TEXT`: argparse takes positionals only in one group
    overrides = parse_overrides(extra, parser)
    if overrides and args.fn in (cmd_generate, cmd_serve):
        parser.error(f"{args.command} takes no config overrides")
    return args, overrides


def main(argv: list[str] | None = None) -> None:
    args, overrides = parse_args(argv)
    try:
        args.fn(args, overrides)
    except UserError as e:
        print(f"chatforge {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\nchatforge {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
