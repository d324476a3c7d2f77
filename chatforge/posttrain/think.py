"""The lecture's "models need tokens to think" experiment, training side: two SFT runs from the same base
checkpoint on the same 2-digit arithmetic problems (tasks/arithmetic.py: arith_think puts the column steps in a
<think> part before the answer, arith_answer gives the answer alone), with the same steps and learning rate. A
model that must write the answer first computes it in one forward pass per token; with the steps first it gets
a token per intermediate result. bench/think.py scores both on the held-out problems."""

import copy
import os
from pathlib import Path

from chatforge.config import apply_overrides
from chatforge.posttrain.sft import sft
from chatforge.runs import Run

VARIANTS = {"think_first": "arith_think", "answer_first": "arith_answer"}  # variant -> task of chatforge.tasks


def variant_run(run: Run, variant: str, conversations: int, steps: int) -> Run:
    """RUN/think/<variant>/: a scratch run that shares RUN's base/ and tokenizer/ (symlinks) and trains on
    `conversations` problems of the variant's task for `steps` steps."""
    path = Path(run.path) / "think" / variant
    path.mkdir(parents=True, exist_ok=True)
    for name in ("base", "tokenizer"):
        link = path / name
        if not link.is_symlink():
            os.symlink((Path(run.path) / name).resolve(), link)
    config = apply_overrides(copy.deepcopy(run.config),
                             {"sft.mixture": f"{VARIANTS[variant]}:{conversations}", "sft.steps": str(steps)})
    return Run(path, config, {"name": f"{Path(run.path).name}-{variant}", "stages": {}})


def train_variants(run: Run, conversations: int, steps: int) -> dict[str, Run]:
    """Both SFT runs, one after the other, from scratch: {variant: its run, with sft/ written}."""
    run.require("pretrain")
    out = {}
    for variant in VARIANTS:
        out[variant] = variant_run(run, variant, conversations, steps)
        print(f"think: {variant} ({VARIANTS[variant]}:{conversations}, {steps} steps)")
        sft(out[variant])
    return out
