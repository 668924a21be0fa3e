import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from conftest import tiny_bert_config, tiny_gpt2_config
from rankwise.adapters import hard_keep
from rankwise.methods import build_adapter
from rankwise.adapters.loraxs import LoraXSLinear, svd_factors
from rankwise.targets import find_targets


def test_svd_init_reproduces_the_rank_r_truncation():
    torch.manual_seed(0)
    w = torch.randn(48, 32)
    a, b = svd_factors(w, 10)
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    truncation = u[:, :10] @ torch.diag(s[:10]) @ vh[:10]
    assert a.shape == (10, 32) and b.shape == (48, 10)
    assert torch.allclose(b @ a, truncation, atol=1e-5)
    # B has orthonormal columns; the rows of A carry the singular values in decreasing order
    assert torch.allclose(b.T @ b, torch.eye(10), atol=1e-5)
    assert torch.allclose(a.norm(dim=1), s[:10], atol=1e-4)


def test_layer_forward_equals_base_plus_delta_and_merge():
    torch.manual_seed(0)
    base = torch.nn.Linear(32, 24)
    layer = LoraXSLinear(base, rank=6, scale=16 / 6)
    with torch.no_grad():
        layer.lora_R.normal_()
    x = torch.randn(5, 32)
    expected = base(x) + x @ layer.delta_weight().T
    assert torch.allclose(layer(x), expected, atol=1e-5)
    manual = base(x) + (16 / 6) * x @ (layer.lora_B @ layer.lora_R @ layer.lora_A).T
    assert torch.allclose(layer(x), manual, atol=1e-5)
    layer.mask = hard_keep([3], 6)[0][torch.maximum(torch.arange(6)[:, None], torch.arange(6)[None, :])]
    masked = base(x) + (16 / 6) * x @ (layer.lora_B[:, :3] @ layer.lora_R[:3, :3] @ layer.lora_A[:3]).T
    assert torch.allclose(layer(x), masked, atol=1e-5)
    out = layer(x)
    layer.merge()
    assert torch.allclose(layer.base(x), out, atol=1e-5)


def test_r_starts_near_zero_so_logits_equal_the_base_model():
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(tiny_bert_config(num_labels=3)).eval()
    ids = torch.randint(1000, 2000, (4, 12))
    with torch.no_grad():
        before = model(input_ids=ids).logits
    targets = find_targets(model)
    adapter = build_adapter(model, "loraxs", targets, [8] * len(targets), [16.0] * len(targets),
                            head_modules=["classifier"])
    assert all(float(m.lora_R.detach().abs().max()) < 1e-4 for m in adapter.modules)
    with torch.no_grad():
        after = adapter.model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4)
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    assert trainable == {f"{t.name}.lora_R" for t in targets} | {"classifier.weight", "classifier.bias"}
    assert adapter.num_adapter_parameters() == len(targets) * 64


def test_gpt2_conv1d_is_wrapped_with_the_right_orientation():
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_gpt2_config()).eval()
    targets = find_targets(model)
    adapter = build_adapter(model, "loraxs", targets, [4] * len(targets), [8.0] * len(targets))
    for t, m in zip(targets, adapter.modules):
        assert m.lora_A.shape == (4, t.in_features) and m.lora_B.shape == (t.out_features, 4)
        w = m.base.weight.T  # Conv1D stores in×out
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        assert torch.allclose(m.lora_B @ m.lora_A, u[:, :4] @ torch.diag(s[:4]) @ vh[:4], atol=1e-5)
    x = torch.randn(2, 5, 32)
    m = adapter.modules[0]
    with torch.no_grad():
        m.lora_R.normal_()
    assert torch.allclose(m(x), m.base(x) + x @ m.delta_weight().T, atol=1e-5)
