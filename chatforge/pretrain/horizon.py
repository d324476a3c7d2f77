"""How long and how wide pretraining runs where the config leaves it to the model: the training horizon in tokens
(param_data_ratio x scaling_params) and the tokens per optimizer step (Power Lines), then the micro-batches
each process runs to make that step."""

import dataclasses
import math

from chatforge.config import GPTConfig, PretrainConfig, model_for_depth
from chatforge.errors import UserError
from chatforge.model.gpt import scaling_params

# Power Lines (Bergsma et al. 2025, arXiv 2505.13738), as nanochat uses it: tokens per step grow as D^0.383 with
# the horizon D, anchored at nanochat's measured 2^19 for d12 at 10.5 tokens per scaling parameter. No LR follows
# the batch: ours were tuned at 4,096 tokens a step, nanochat's at 2^19, so a sqrt rule contradicts one of them.
BATCH_REF_TOKENS, BATCH_EXPONENT, RATIO_REF = 2**19, 0.383, 10.5


def batch_tokens_for(m: GPTConfig, horizon_tokens: int) -> int:
    """Tokens per optimizer step for training `m` on `horizon_tokens`, a power of two (rounded in log2). The d12
    anchor shares `m`'s vocabulary and context, so only the depth and the horizon move the batch."""
    ref_horizon = RATIO_REF * scaling_params(model_for_depth(12, m.vocab_size, m.seq_len))
    tokens = BATCH_REF_TOKENS * (horizon_tokens / ref_horizon) ** BATCH_EXPONENT
    return 2 ** round(math.log2(tokens))


def resolve_pretrain(pc: PretrainConfig, m: GPTConfig, world: int) -> PretrainConfig:
    """`pc` resolved for training `m` on `world` processes: batch_tokens the exact tokens per step (derived where
    it is -1, batch_size x grad_accum x processes rows where 0), grad_accum the micro-batches each process runs
    per step to make it, steps derived where 0. Derived batches and steps both use the compute-optimal horizon,
    param_data_ratio x scaling_params, even where the steps are explicit: the batch of a horizon of steps x batch
    would be circular, and the ratio is the dial to turn."""
    if (pc.steps == 0 or pc.batch_tokens == -1) and pc.param_data_ratio <= 0:
        raise UserError(f"pretrain.param_data_ratio must be > 0 to derive the steps or the batch, "
                        f"got {pc.param_data_ratio}")
    horizon = pc.param_data_ratio * scaling_params(m)
    micro = pc.batch_size * m.seq_len * world
    if pc.batch_tokens == -1:
        batch_tokens = batch_tokens_for(m, round(horizon))
        if batch_tokens < micro:
            raise UserError(f"the batch derived from the depth, {batch_tokens:,} tokens per step, is smaller than "
                            f"one micro-batch on every process (batch_size x seq_len x processes = {pc.batch_size} "
                            f"x {m.seq_len} x {world} = {micro:,}); lower pretrain.batch_size or set "
                            f"pretrain.batch_tokens")
    else:
        batch_tokens = pc.batch_tokens or micro * pc.grad_accum
    if batch_tokens % micro:
        raise UserError(f"pretrain.batch_tokens={batch_tokens} is not a multiple of batch_size x seq_len x "
                        f"processes = {pc.batch_size} x {m.seq_len} x {world} = {micro}")
    steps = pc.steps or round(horizon / batch_tokens)
    if steps < 1:
        raise UserError(f"pretrain.param_data_ratio={pc.param_data_ratio} derives {horizon:,.0f} training tokens, "
                        f"less than half a step of {batch_tokens:,}; raise it")
    return dataclasses.replace(pc, batch_tokens=batch_tokens, grad_accum=batch_tokens // micro, steps=steps)
