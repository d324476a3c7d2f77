import dataclasses

import pytest

from chatforge.config import apply_overrides, make_config
from chatforge.model.gpt import GPT, GPTConfig, scaling_params
from chatforge.pretrain.horizon import batch_tokens_for, resolve_pretrain


def test_gpu_presets_keep_their_global_batch_under_torchrun():
    for preset, tokens in (("d12", 2**19), ("d20", 2**20)):
        cfg = make_config(preset)
        for world in (1, 2, 4, 8):
            pc = resolve_pretrain(cfg.pretrain, cfg.model, world)
            assert pc.grad_accum * pc.batch_size * cfg.model.seq_len * world == tokens


@pytest.mark.parametrize("cfg", [GPTConfig(vocab_size=512, n_layer=2, n_embd=128, n_head=4, n_kv_head=4),
                                 GPTConfig(vocab_size=300, n_layer=3, n_embd=192, n_head=6, n_kv_head=2,
                                           mlp_hidden=320),
                                 make_config("micro").model])
def test_scaling_params_count_the_matrices_and_the_head(cfg):
    model = GPT(cfg)
    matrices = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and "embed_tokens" not in name)
    assert scaling_params(cfg) == matrices


# d12 at vocab 32768: 12 layers x (4 x 768^2 attention + 3 x 768 x 2048 SwiGLU) + 32768 x 768 head
D12_SCALING = 12 * (4 * 768**2 + 3 * 768 * 2048) + 32768 * 768
# d20 at vocab 65536: width 1280, SwiGLU 3456 (8/3 x 1280 rounded up to a multiple of 64)
D20_SCALING = 20 * (4 * 1280**2 + 3 * 1280 * 3456) + 65536 * 1280


def test_d12_is_the_anchor_and_derives_2_19_tokens_per_step():
    cfg = make_config("d12")
    assert scaling_params(cfg.model) == D12_SCALING == 110_100_480
    pc = resolve_pretrain(cfg.pretrain, cfg.model, 1)
    assert pc.batch_tokens == 2**19
    assert pc.steps == round(10.5 * D12_SCALING / 2**19) == 2205


def test_d20_derives_2_20_tokens_per_step():
    cfg = make_config("d20")
    assert scaling_params(cfg.model) == D20_SCALING
    # its d12 anchor shares the 65536 vocabulary: 2^19 x (D20 / D12)^0.383 = 2^19 x 1.62, nearer 2^20 than 2^19
    d12_scaling = 12 * (4 * 768**2 + 3 * 768 * 2048) + 65536 * 768
    assert 2**19.5 < 2**19 * (D20_SCALING / d12_scaling) ** 0.383 < 2**20.5
    pc = resolve_pretrain(cfg.pretrain, cfg.model, 8)
    assert (pc.batch_tokens, pc.steps) == (2**20, round(10.5 * D20_SCALING / 2**20)) == (2**20, 4810)


def test_a_deeper_model_or_a_longer_horizon_derives_a_batch_at_least_as_big():
    batches = [batch_tokens_for(make_config("d12", depth=d).model, 10**9) for d in (12, 16, 20, 26)]
    assert batches == sorted(batches)
    by_depth = [resolve_pretrain(c.pretrain, c.model, 1).batch_tokens
                for c in (make_config("d12", depth=d) for d in (12, 16, 20, 26))]
    assert by_depth == sorted(by_depth) and by_depth[0] == 2**19 and by_depth[-1] > 2**19
    m = make_config("d12").model
    assert batch_tokens_for(m, 4 * 10**9) > batch_tokens_for(m, 10**9)  # 4^0.383 = 1.7x: a power of two up


def test_explicit_batch_and_steps_win_over_the_derived_ones():
    cfg = apply_overrides(make_config("d12"), {"pretrain.batch_tokens": "4096", "pretrain.steps": "10",
                                               "pretrain.batch_size": "4"})
    pc = resolve_pretrain(cfg.pretrain, cfg.model, 1)
    assert (pc.batch_tokens, pc.steps) == (4096, 10)
    # explicit steps with a derived batch: the batch of the compute-optimal horizon, whatever the steps
    cfg = apply_overrides(make_config("d12"), {"pretrain.steps": "10"})
    assert (resolve_pretrain(cfg.pretrain, cfg.model, 1).batch_tokens, cfg.pretrain.steps) == (2**19, 10)
    # an explicit batch with derived steps: the ratio's tokens over that batch (1.156B / 2^18)
    cfg = apply_overrides(make_config("d12"), {"pretrain.batch_tokens": str(2**18)})
    assert resolve_pretrain(cfg.pretrain, cfg.model, 1).steps == round(10.5 * D12_SCALING / 2**18) == 4410
    # a batch of rows (batch_tokens=0) with derived steps: 16 rows x 1024 tokens x 2 processes
    cfg = apply_overrides(make_config("d12"), {"pretrain.batch_tokens": "0", "pretrain.batch_size": "16"})
    assert resolve_pretrain(cfg.pretrain, cfg.model, 2).steps == round(10.5 * D12_SCALING / (16 * 1024 * 2))


@pytest.mark.parametrize("preset,steps,batch_size", [("micro", 40, 8), ("tiny", 900, 8), ("small", 3000, 16)])
def test_cpu_presets_keep_their_explicit_batch_and_steps(preset, steps, batch_size):
    cfg = make_config(preset)
    assert (cfg.pretrain.steps, cfg.pretrain.batch_size, cfg.pretrain.grad_accum, cfg.pretrain.batch_tokens) == (
        steps, batch_size, 1, 0)
    # resolved, only the tokens per step are written out: the same rows, the same steps
    expected = dataclasses.replace(cfg.pretrain, batch_tokens=batch_size * cfg.model.seq_len)
    assert resolve_pretrain(cfg.pretrain, cfg.model, 1) == expected


def test_bad_ratio_or_batch_tokens_say_what_is_wrong():
    with pytest.raises(ValueError, match="pretrain.batch_tokens must be"):
        apply_overrides(make_config("tiny"), {"pretrain.batch_tokens": "-2"})
    with pytest.raises(ValueError, match="pretrain.steps must be"):
        apply_overrides(make_config("tiny"), {"pretrain.steps": "-1"})
    # the ratio is needed by derived steps (tiny with steps=0) and by a derived batch (d12 with explicit steps)
    for preset, overrides in (("tiny", {"pretrain.steps": "0"}), ("d12", {"pretrain.steps": "10"})):
        cfg = apply_overrides(make_config(preset), {**overrides, "pretrain.param_data_ratio": "0"})
        with pytest.raises(ValueError, match="param_data_ratio must be > 0"):
            resolve_pretrain(cfg.pretrain, cfg.model, 1)
    cfg = make_config("micro")  # a ratio so small that not one step is left
    with pytest.raises(ValueError, match="less than half a step"):
        resolve_pretrain(dataclasses.replace(cfg.pretrain, steps=0, param_data_ratio=1e-3), cfg.model, 1)
    cfg = make_config("d12")  # 2^19 tokens are 16 micro-batches of 32 x 1024, so 32 processes want 2^20
    with pytest.raises(ValueError, match=r"smaller than one micro-batch .* 32 x 1024 x 32 = 1,048,576"):
        resolve_pretrain(cfg.pretrain, cfg.model, 32)
