"""Optimizers: Muon for the hidden weight matrices, AdamW for embeddings, head and norm weights.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers") replaces each matrix's momentum
by the nearest semi-orthogonal matrix before stepping, computed with a few Newton-Schulz
iterations. Every direction of the update then moves by the same amount, which lets hidden
matrices take much larger steps than Adam allows. It only makes sense for 2-D weights inside the
network; the embedding (a lookup table), the head and the 1-D norm weights stay on AdamW
(as in modded-nanogpt and nanochat).

Both live in one `torch.optim.Optimizer`, so the training loops, the LR schedule (`base_lr` per
group) and the checkpoints (one `state_dict`) do not care which optimizer a group uses.
"""

import torch

from chatforge.model.gpt import GPT
from chatforge.model.precision import cpu_has_bf16

# Quintic Newton-Schulz coefficients tuned by Keller Jordan to push singular values into ~[0.7, 1.2]
# in 5 steps; an exact orthogonalisation is not needed for the update to work.
NS_COEFFS = (3.4445, -4.7750, 2.0315)
# 4 iterations, not the usual 5: on the tiny preset val bpb after 300 steps was 1.9367 vs 1.9362 with 5 (3: 1.9431),
# for ~20% less Newton-Schulz work, which is ~12% of a CPU training step (docs/benchmarks.md)
NS_STEPS = 4


def orthogonalize(g: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T, for a (..., m, n) stack of matrices, in `dtype`."""
    a, b, c = NS_COEFFS
    x = g.to(dtype).reshape(-1, *g.shape[-2:])
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation so x @ x^T is the small Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        # a*x + (b*gram + c*gram@gram) @ x with the scalings and sums inside two baddbmm calls: 15-25% faster
        # on CPU than separate elementwise passes (tiny preset's stacks, measured)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return (x.mT if tall else x).reshape(g.shape)


class MuonAdamW(torch.optim.Optimizer):
    """Groups with `muon=True` take Muon steps (Nesterov momentum, orthogonalised, scaled by
    sqrt(max(1, rows/cols)) so tall and wide matrices move alike); the rest take AdamW steps.
    Weight decay is decoupled (multiplied by the LR) in both."""

    def __init__(self, groups: list[dict], betas=(0.9, 0.95), eps: float = 1e-10, momentum: float = 0.95,
                 ns_steps: int = NS_STEPS):
        super().__init__(groups, dict(lr=1e-3, weight_decay=0.0, muon=False, betas=betas, eps=eps,
                                      momentum=momentum, ns_steps=ns_steps))
        # bf16 Newton-Schulz is as good as fp32 for this purpose and 4x faster where bf16 is native;
        # a CPU without bf16 instructions would emulate it, slower than fp32.
        self.ns_dtype = torch.bfloat16 if torch.cuda.is_available() or cpu_has_bf16() else torch.float32

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self._muon(group, params)
            else:
                self._adamw(group, params)

    def _muon(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
        by_shape: dict[tuple, list[torch.Tensor]] = {}
        for p in params:
            by_shape.setdefault(tuple(p.shape), []).append(p)
        for shape, ps in by_shape.items():  # one batched Newton-Schulz per shape: fewer, larger matmuls
            updates = []
            for p in ps:
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                buf = state["momentum"]
                buf.lerp_(p.grad, 1 - beta)
                updates.append(p.grad.lerp(buf, beta))  # Nesterov: look ahead along the momentum
            ortho = orthogonalize(torch.stack(updates), group["ns_steps"], self.ns_dtype)
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            for p, u in zip(ps, ortho, strict=True):
                if wd:
                    p.mul_(1 - lr * wd)
                p.add_(u.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, group: dict, params: list[torch.Tensor]) -> None:
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            if wd:
                p.mul_(1 - lr * wd)
            denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
            p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def make_optimizer(model: GPT, lr: float, weight_decay: float = 0.0, matrix_lr: float = 0.0) -> MuonAdamW:
    """`lr` is AdamW's rate for the head and norm weights (embeddings get 10x: they start at std 1 and
    need larger steps to move in relative terms; the near-zero head is the most sensitive matrix).
    `matrix_lr` > 0 puts the hidden matrices on Muon at that rate; 0 keeps them on AdamW at `lr`."""
    hidden = [p for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "lm_head" not in n]
    groups = [
        {"params": hidden, "lr": matrix_lr or lr, "weight_decay": weight_decay, "muon": matrix_lr > 0},
        {"params": [model.embed_tokens.weight], "lr": lr * 10},
        {"params": [model.lm_head.weight], "lr": lr},
        {"params": [p for p in model.parameters() if p.dim() == 1], "lr": lr},
    ]
    for g in groups:
        g["base_lr"] = g["lr"]
    return MuonAdamW(groups)
