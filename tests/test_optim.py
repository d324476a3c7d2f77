import copy

import pytest
import torch

from chatforge.model.gpt import GPT, GPTConfig
from chatforge.model.optim import make_optimizer, orthogonalize

CFG = GPTConfig(vocab_size=97, seq_len=16, n_layer=2, n_embd=32, n_head=2, n_kv_head=1)


# Jordan's quintic coefficients trade exactness for speed: after 5 iterations singular values land in about
# [0.7, 1.2]; after 4 (the default, NS_STEPS) the smallest of these condition-100 inputs are still near 0.42.
@pytest.mark.parametrize("steps,low", [(5, 0.6), (4, 0.4)])
@pytest.mark.parametrize("shape", [(64, 32), (32, 96), (3, 48, 24)])
def test_orthogonalize_approximates_the_polar_factor(shape, steps, low):
    torch.manual_seed(0)
    g = torch.randn(shape) * torch.logspace(-1, 1, shape[-1])  # columns of very different scale
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    for dtype in (torch.float32, torch.bfloat16):
        o = orthogonalize(g, steps, dtype=dtype).float()
        assert o.shape == g.shape
        s = torch.linalg.svdvals(o)
        assert s.min() > low and s.max() < 1.25
        assert torch.nn.functional.cosine_similarity(o.flatten(-2), (u @ vh).flatten(-2), dim=-1).min() > 0.95


def batch(seed=0):
    g = torch.Generator().manual_seed(seed % 2)  # two batches, revisited: learnable by memorising
    x = torch.randint(0, CFG.vocab_size, (4, CFG.seq_len + 1), generator=g)
    return x[:, :-1], x[:, 1:]


def train(model, opt, steps, start=0):
    losses = []
    for step in range(start, start + steps):
        x, y = batch(step)
        loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def test_adamw_groups_match_torch_adamw():
    torch.manual_seed(0)
    ours = GPT(CFG)
    ref = copy.deepcopy(ours)
    opt = make_optimizer(ours, lr=3e-3, weight_decay=0.1, matrix_lr=0.0)
    ref_groups = [{"params": g["params"], "lr": g["lr"], "weight_decay": g.get("weight_decay", 0.0)}
                  for g in make_optimizer(ref, lr=3e-3, weight_decay=0.1, matrix_lr=0.0).param_groups]
    ref_opt = torch.optim.AdamW(ref_groups, betas=(0.9, 0.95), eps=1e-10)
    assert all(not g["muon"] for g in opt.param_groups)
    train(ours, opt, 5)
    train(ref, ref_opt, 5)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_muon_takes_the_hidden_matrices_only():
    model = GPT(CFG)
    opt = make_optimizer(model, lr=3e-3, matrix_lr=0.02)
    muon = {id(p) for g in opt.param_groups if g["muon"] for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    assert names and all(n.startswith("layers.") and n.endswith("proj.weight") for n in names)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_muon_learns_faster_than_adamw_at_equal_steps():
    torch.manual_seed(0)
    model_a = GPT(CFG)
    model_m = copy.deepcopy(model_a)
    loss_a = train(model_a, make_optimizer(model_a, lr=3e-3), 30)
    loss_m = train(model_m, make_optimizer(model_m, lr=3e-3, matrix_lr=0.02), 30)
    assert loss_m[-1] < loss_m[0] - 0.5
    assert sum(loss_m[-5:]) < sum(loss_a[-5:])


def test_state_dict_round_trip_continues_exactly():
    torch.manual_seed(0)
    model = GPT(CFG)
    twin = copy.deepcopy(model)
    opt = make_optimizer(model, lr=3e-3, weight_decay=0.1, matrix_lr=0.02)
    uninterrupted = train(model, opt, 6)
    opt2 = make_optimizer(twin, lr=3e-3, weight_decay=0.1, matrix_lr=0.02)
    first = train(twin, opt2, 3)
    state = copy.deepcopy(opt2.state_dict())
    opt3 = make_optimizer(twin, lr=3e-3, weight_decay=0.1, matrix_lr=0.02)
    opt3.load_state_dict(state)
    assert first + train(twin, opt3, 3, start=3) == uninterrupted

