"""Think-first vs answer-first, run for real (the lecture's "models need tokens to think"): two SFT runs from
RUN's base checkpoint on the same 2-digit arithmetic problems (chatforge/posttrain/think.py), then each one's
greedy accuracy on the same held-out problems, scored by the task's checker on the reply's final sentence.

    .venv/bin/python bench/think.py --run runs/tiny [--quick] [--steps N] [--conversations N] [--n N]

Writes RUN/eval/think.json ({"think_first_acc", "answer_first_acc", "n", "steps", "details"}; `chatforge eval
chat` adds its top-level figures to the chat figures) and prints it as the last line. The SFT runs live in
RUN/think/<variant>/.
"""

import argparse
import json
from pathlib import Path

from chatforge.model.checkpoint import load_model
from chatforge.model.precision import pick_device
from chatforge.posttrain.think import VARIANTS, train_variants
from chatforge.runs import Run, open_run, write_json
from chatforge.tasks import TASKS
from chatforge.tasks.score import score_examples
from chatforge.tokenizer.bpe import load_tokenizer


def score_variant(run: Run, vrun: Run, variant: str, n: int) -> dict[str, float]:
    """The variant's sft/ checkpoint on n held-out problems, greedy, without tools: its figures."""
    task = TASKS[VARIANTS[variant]]
    examples = [(task, ex) for ex in task.examples("test", n, run.config.sft.seed, run.config)]
    model, tok = load_model(vrun.path / "sft", pick_device()), load_tokenizer(Path(run.path) / "tokenizer")
    return score_examples(model, tok, examples, None, run.config.sft.identity)["figures"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="a run with a base checkpoint (pretrain done)")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 20 steps, 40 conversations, 16 problems")
    ap.add_argument("--steps", type=int, default=0, help="SFT steps of each run (default: the run's sft.steps)")
    ap.add_argument("--conversations", type=int, default=4000, help="training problems of each run")
    ap.add_argument("--n", type=int, default=200, help="held-out problems each run is scored on")
    args = ap.parse_args()
    run = open_run(args.run, save=False)
    steps = 20 if args.quick else args.steps or run.config.sft.steps
    conversations, n = (40, 16) if args.quick else (args.conversations, args.n)
    result: dict = {}
    details: dict = {"conversations": conversations}
    for variant, vrun in train_variants(run, conversations, steps).items():
        figures = score_variant(run, vrun, variant, n)
        result[f"{variant}_acc"] = figures[f"{variant}_acc"]
        details[f"{variant}_unfinished_rate"] = figures["unfinished_rate"]
    result |= {"n": n, "steps": steps, "details": details}  # only the top level's numbers join eval chat's figures
    (Path(run.path) / "eval").mkdir(exist_ok=True)
    write_json(Path(run.path) / "eval" / "think.json", result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
