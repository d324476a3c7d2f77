import dataclasses

import pytest
import torch

from chatforge.model.checkpoint import load_model, load_training_state, save_checkpoint
from chatforge.model.gpt import GPT, GPTConfig, KVCache

CFG = GPTConfig(vocab_size=97, seq_len=32, n_layer=2, n_embd=32, n_head=4, n_kv_head=2)


def random_model(seed=0, cfg=CFG) -> GPT:
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():  # zero-initialised projections would hide bugs in the attention path
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def test_forward_shapes_and_initial_loss():
    torch.manual_seed(0)
    model = GPT(CFG)
    x = torch.randint(0, CFG.vocab_size, (3, CFG.seq_len))
    assert model(x).shape == (3, CFG.seq_len, CFG.vocab_size)
    loss = model(x, x)
    assert abs(loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.1  # near-uniform at init


def test_kv_cache_matches_full_recompute():
    model = random_model()
    x = torch.randint(0, CFG.vocab_size, (2, 20))
    full = model(x)
    cache = KVCache(CFG, 2, 20)
    parts = [model(x[:, :7], cache=cache)]  # prefill, then a chunk, then single tokens
    parts.append(model(x[:, 7:12], cache=cache))
    parts += [model(x[:, t : t + 1], cache=cache) for t in range(12, 20)]
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_fused_inference_weights_compute_the_same_logits(qk_norm):
    """The engine's copy (q/k/v and gate/up fused, RMSNorm weights folded in) through the same layers."""
    from chatforge.model.gpt import causal_attention

    model = random_model(cfg=dataclasses.replace(CFG, qk_norm=qk_norm))
    x = torch.randint(0, CFG.vocab_size, (2, 12))
    w = model.weights().fused()
    assert len(w.layers[0].qkv) == len(w.layers[0].mlp) == 1 and w.norm is None and w.layers[0].mlp_norm is None
    with torch.no_grad():
        logits = w.logits(w.hidden(x, model.rope_cos[:12], model.rope_sin[:12],
                                   lambda layer, q, k, v: causal_attention(q, k, v)))
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_causality():
    model = random_model()
    x = torch.randint(0, CFG.vocab_size, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % CFG.vocab_size
    assert torch.allclose(model(x)[0, :10], model(y)[0, :10], atol=1e-6)


def test_ignored_targets():
    model = random_model()
    x = torch.randint(0, CFG.vocab_size, (1, 8))
    y = x.clone()
    y[0, :4] = -1
    per_token = model(x, x, reduction="none")
    assert torch.allclose(model(x, y), per_token[4:].mean())


def test_loss_decreases_when_overfitting():
    torch.manual_seed(0)
    model = GPT(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x = torch.randint(0, CFG.vocab_size, (4, CFG.seq_len + 1))
    losses = []
    for _ in range(60):
        loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip(tmp_path):
    model = random_model()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).backward()
    opt.step()
    save_checkpoint(tmp_path / "ckpt", model, opt, {"step": 7})
    again = load_model(tmp_path / "ckpt")
    assert again.cfg == CFG
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    opt_state, state = load_training_state(tmp_path / "ckpt")
    assert state == {"step": 7} and opt_state["state"]
    # saving again replaces the checkpoint and leaves no temporary directories behind
    save_checkpoint(tmp_path / "ckpt", again, None, {"step": 8})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_flops_per_token_counts_matmuls():
    model = GPT(CFG)
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    assert model.flops_per_token() == 6 * matmul + 12 * CFG.n_layer * CFG.n_head * CFG.head_dim * CFG.seq_len


def test_sample_greedy_equals_argmax_of_full_recomputation():
    model = random_model().eval()
    prompt, out = [1, 5, 9], []
    new = model.sample(prompt, 10)
    for _ in range(10):
        out.append(int(model(torch.tensor([prompt + out]))[0, -1].argmax()))
    assert new == out
    assert len(model.sample(list(range(30)), 10)) == 2  # stops at the context length
    a, b = model.sample(prompt, 8, temperature=1.0, seed=3), model.sample(prompt, 8, temperature=1.0, seed=3)
    assert a == b and a != model.sample(prompt, 8, temperature=1.0, seed=4)



def test_compiled_cpu_attention_matches_flash_sdpa():
    # Under torch.compile on CPU, causal_attention takes the plain formula; eager, flash SDPA. GQA: 4 vs 2 heads.
    from chatforge.model.gpt import causal_attention

    torch.manual_seed(0)
    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    k, v = (torch.randn(2, 2, 16, 8, requires_grad=True) for _ in range(2))
    outs = []
    for fn in (causal_attention, torch.compile(causal_attention)):
        y = fn(q, k, v)
        y.square().sum().backward()
        outs.append([y, *(t.grad.clone() for t in (q, k, v))])
        q.grad = k.grad = v.grad = None
    for a, b in zip(*outs, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
