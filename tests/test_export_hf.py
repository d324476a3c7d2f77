import pytest
import torch

from chatforge.export.hf import to_hf_config, to_hf_model
from chatforge.model.gpt import GPT, GPTConfig

pytest.importorskip("transformers")


@pytest.mark.parametrize("qk_norm,cls", [(True, "Qwen3ForCausalLM"), (False, "LlamaForCausalLM")])
def test_hf_logits_equal_ours(qk_norm, cls):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=300, seq_len=32, n_layer=2, n_embd=64, n_head=4, n_kv_head=2, qk_norm=qk_norm,
                          rope_theta=5000.0))
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised projections would hide a mapping error
            p.add_(torch.randn_like(p) * 0.2)
    model.eval()
    hf = to_hf_model(model)
    assert type(hf).__name__ == cls and to_hf_config(model.cfg).architectures == [cls]
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        assert torch.allclose(hf(x).logits, model(x), atol=1e-5)
        out = hf.generate(x[:1, :5], max_new_tokens=8, do_sample=False)
    seq = x[0, :5].tolist()
    with torch.no_grad():
        for _ in range(8):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert out[0].tolist() == seq
