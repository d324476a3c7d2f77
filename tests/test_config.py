import pytest

from chatforge.config import PRESETS, adamw_lr, apply_overrides, from_dict, make_config, to_dict
from chatforge.model.gpt import GPTConfig


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_are_valid_and_round_trip(preset):
    cfg = make_config(preset)
    assert cfg.model.vocab_size == cfg.tokenizer.vocab_size
    assert cfg.model.n_layer == cfg.depth
    assert from_dict(to_dict(cfg)) == cfg


def test_depth_dial_derives_width_and_heads():
    cfg = make_config("tiny", depth=12)
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head, cfg.model.head_dim) == (12, 768, 6, 128)
    assert make_config("tiny", depth=3).model.head_dim == 64  # a width of 192 takes 64-dim heads
    assert cfg.model.ffn_dim % 64 == 0 and cfg.model.ffn_dim >= 8 * 768 // 3


def test_adamw_lr_follows_the_width_unless_set():
    assert adamw_lr(make_config("tiny").model.n_embd) == pytest.approx(6e-3)  # the tuned tiny value
    assert adamw_lr(make_config("d12").model.n_embd) == pytest.approx(6e-3 / 3**0.5)
    assert make_config("d12").pretrain.lr == 0  # derived when the optimizer is built, from the model trained


def test_overrides_are_typed():
    cfg = apply_overrides(make_config("tiny"), {"pretrain.steps": "12", "pretrain.compile": "false",
                                                "pretrain.lr": "1e-4", "sft.identity": "Ada"})
    assert cfg.pretrain.steps == 12 and cfg.pretrain.compile is False
    assert cfg.pretrain.lr == 1e-4 and cfg.sft.identity == "Ada"


def test_vocab_override_follows_into_the_model():
    cfg = apply_overrides(make_config("micro"), {"tokenizer.vocab_size": "600"})
    assert cfg.model.vocab_size == 600


@pytest.mark.parametrize("key,value,msg", [
    ("pretrain.nope", "1", "unknown field"),
    ("nosection.x", "1", "unknown config section"),
    ("steps", "1", "SECTION.FIELD"),
    ("pretrain.steps", "many", "bad value"),
    ("pretrain.compile", "maybe", "boolean"),
    ("model.n_head", "3", "not divisible"),
])
def test_bad_overrides_say_what_is_wrong(key, value, msg):
    with pytest.raises(ValueError, match=msg):
        apply_overrides(make_config("tiny"), {key: value})


def test_model_config_rejects_inconsistent_heads():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_embd=256, n_head=4, n_kv_head=3)


def test_gpu_presets_keep_their_global_batch_under_torchrun():
    from chatforge.pretrain.train import grad_accum_steps
    for preset, tokens in (("d12", 2**18), ("d20", 2**19)):
        cfg = make_config(preset)
        for world in (1, 2, 4, 8):
            accum = grad_accum_steps(cfg.pretrain, cfg.model.seq_len, world)
            assert accum * cfg.pretrain.batch_size * cfg.model.seq_len * world == tokens
