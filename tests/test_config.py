import dataclasses

import pytest

from chatforge.config import (
    PRESETS,
    Config,
    adamw_lr,
    apply_overrides,
    from_dict,
    make_config,
    to_dict,
)
from chatforge.errors import UserError
from chatforge.model.gpt import GPTConfig


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_are_valid_and_round_trip(preset):
    cfg = make_config(preset)
    assert cfg.model.vocab_size == cfg.tokenizer.vocab_size
    assert cfg.model.n_layer == cfg.depth
    assert from_dict(to_dict(cfg)) == cfg


def test_an_older_manifest_opens_with_defaults_and_drops_removed_fields():
    old = to_dict(make_config("micro"))
    del old["eval"], old["tools"]["top_k"]  # made before these existed
    old["sft"]["n_identity"] = 40  # a field this version no longer has
    with pytest.warns(UserWarning, match=r"dropped: sft\.n_identity$"):
        cfg = from_dict(old)
    assert cfg == make_config("micro")


def test_every_section_overrides_and_round_trips_by_its_fields():
    cfg = apply_overrides(make_config("micro"), {"eval.bpb_tokens": "2048", "tools.python": "off"})
    assert from_dict(to_dict(cfg)) == cfg and cfg.eval.bpb_tokens == 2048 and cfg.tools.python is False
    assert set(to_dict(cfg)) == {f.name for f in dataclasses.fields(Config)}


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
    with pytest.raises(UserError, match=msg):
        apply_overrides(make_config("tiny"), {key: value})


def test_an_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="unknown preset 'huge'; choose one of micro"):
        make_config("huge")


def test_model_config_rejects_inconsistent_heads():
    with pytest.raises(ValueError, match="n_kv_head"):
        GPTConfig(n_embd=256, n_head=4, n_kv_head=3)
