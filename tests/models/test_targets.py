import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from conftest import tiny_bert_config, tiny_gpt2_config, tiny_llama_config, tiny_roberta_config
from rankwise.errors import ConfigError
from rankwise.targets import find_targets, layer_index, matrix_kind


@pytest.mark.parametrize("name,kind", [
    ("bert.encoder.layer.0.attention.self.query", "attention"),
    ("bert.encoder.layer.0.attention.self.key", "attention"),
    ("bert.encoder.layer.3.attention.output.dense", "attention"),
    ("bert.encoder.layer.3.intermediate.dense", "mlp"),
    ("bert.encoder.layer.3.output.dense", "mlp"),
    ("roberta.encoder.layer.11.attention.self.value", "attention"),
    ("roberta.encoder.layer.11.output.dense", "mlp"),
    ("transformer.h.2.attn.c_attn", "attention"),
    ("transformer.h.2.attn.c_proj", "attention"),
    ("transformer.h.2.mlp.c_fc", "mlp"),
    ("transformer.h.2.mlp.c_proj", "mlp"),
    ("model.layers.7.self_attn.q_proj", "attention"),
    ("model.layers.7.self_attn.o_proj", "attention"),
    ("model.layers.7.mlp.gate_proj", "mlp"),
    ("model.layers.7.mlp.down_proj", "mlp"),
])
def test_matrix_kind(name, kind):
    assert matrix_kind(name) == kind


def test_layer_index():
    assert layer_index("bert.encoder.layer.11.output.dense") == 11
    assert layer_index("transformer.h.3.mlp.c_fc") == 3
    assert layer_index("model.layers.29.mlp.up_proj") == 29
    assert layer_index("classifier.dense") is None


def summary(targets):
    return [(t.name.split(".", 1)[1] if t.name.startswith(("bert.", "roberta.")) else t.name, t.layer, t.kind)
            for t in targets]


def test_bert_default_is_the_loraxs_set():
    model = AutoModelForSequenceClassification.from_config(tiny_bert_config())
    targets = find_targets(model)
    assert len(targets) == 3 * 4
    assert [t.name.rsplit("layer.0.", 1)[-1] for t in targets[:4]] == [
        "attention.self.query", "attention.self.value", "attention.output.dense", "output.dense"]
    assert [t.kind for t in targets[:4]] == ["attention", "attention", "attention", "mlp"]
    assert (targets[3].in_features, targets[3].out_features) == (64, 32)


def test_roberta_targets_and_kinds():
    model = AutoModelForSequenceClassification.from_config(tiny_roberta_config())
    targets = find_targets(model)
    assert len(targets) == 12 and {t.kind for t in targets} == {"attention", "mlp"}
    assert all("classifier" not in t.name for t in find_targets(model, "all-linear"))


def test_every_linear_adds_the_heads_linear_layers_and_lora_reaches_them():
    """`every-linear` is LoRA Without Regret's inject_lora: every nn.Linear, the head's too, as the last block's."""
    import torch
    from transformers import DistilBertConfig

    from rankwise.adapters.lora import apply_lora, lora_config
    from rankwise.models import head_modules

    distilbert = AutoModelForSequenceClassification.from_config(DistilBertConfig(
        vocab_size=100, dim=32, hidden_dim=64, n_layers=2, n_heads=2, num_labels=4))
    roberta = AutoModelForSequenceClassification.from_config(tiny_roberta_config())
    for model, head in ((distilbert, ["pre_classifier", "classifier"]), (roberta, ["classifier.dense",
                                                                                  "classifier.out_proj"])):
        targets = find_targets(model, "every-linear")
        linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        assert [t.name for t in targets] == linear  # all of them, in model order
        last = max(t.layer for t in targets if t.kind != "head")
        assert [(t.name, t.kind, t.layer) for t in targets if t.kind == "head"] == [(h, "head", last) for h in head]
        assert [t.name for t in find_targets(model, "all-linear")] == linear[:-len(head)]
        config = lora_config(linear, [8] * len(linear), [16.0] * len(linear), False, 0.0, head_modules(model),
                             "SEQ_CLS")
        peft_model = apply_lora(model, config)  # the head gets adapters, not PEFT's trainable copy
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        assert trainable == sum(8 * (t.in_features + t.out_features) for t in targets)
    # LoRA-XS on every linear layer of a fresh model: only each R trains, the head's own weights too stay frozen.
    from rankwise.methods import build_adapter

    model = AutoModelForSequenceClassification.from_config(tiny_roberta_config())
    targets = find_targets(model, "every-linear")
    adapter = build_adapter(model, "loraxs", targets, [2] * len(targets), [16.0] * len(targets),
                            head_modules=head_modules(model))
    assert {n: p.numel() for n, p in adapter.model.named_parameters() if p.requires_grad} == \
        {f"{t.name}.lora_R": 4 for t in targets}


def test_gpt2_conv1d_targets_shapes_and_kinds():
    model = AutoModelForCausalLM.from_config(tiny_gpt2_config())
    targets = find_targets(model)
    layer0 = [(t.name, t.kind, t.in_features, t.out_features) for t in targets if t.layer == 0]
    assert layer0 == [("transformer.h.0.attn.c_attn", "attention", 32, 96),
                      ("transformer.h.0.attn.c_proj", "attention", 32, 32),
                      ("transformer.h.0.mlp.c_fc", "mlp", 32, 128),
                      ("transformer.h.0.mlp.c_proj", "mlp", 128, 32)]


def test_llama_targets_and_kinds():
    model = AutoModelForCausalLM.from_config(tiny_llama_config())
    targets = find_targets(model)
    assert len(targets) == 3 * 7
    kinds = {t.name.rsplit(".", 1)[1]: t.kind for t in targets}
    assert kinds == {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "o_proj": "attention",
                     "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
    assert all("lm_head" not in t.name for t in find_targets(model, "all-linear"))


def test_custom_target_suffixes_and_errors():
    model = AutoModelForSequenceClassification.from_config(tiny_bert_config())
    assert len(find_targets(model, "query,key")) == 6
    with pytest.raises(ConfigError, match="q_proj matches no module"):
        find_targets(model, "query,q_proj")
    with pytest.raises(ConfigError, match="target_modules"):
        find_targets(model, "nothing_here")


def _family_configs():
    """A tiny random config per family rankwise infers targets for (3 layers unless the family shares them)."""
    from transformers import (AlbertConfig, DebertaV2Config, DistilBertConfig, ElectraConfig, GemmaConfig,
                              MistralConfig, PhiConfig, Qwen2Config, XLMRobertaConfig)

    encoder = dict(vocab_size=1000, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=64)
    decoder = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return {
        "bert": (tiny_bert_config(), 4), "roberta": (tiny_roberta_config(), 4),
        "xlm-roberta": (XLMRobertaConfig(**encoder), 4), "electra": (ElectraConfig(embedding_size=32, **encoder), 4),
        "deberta-v2": (DebertaV2Config(**encoder), 4),
        "distilbert": (DistilBertConfig(vocab_size=1000, dim=32, n_layers=3, n_heads=2, hidden_dim=64,
                                        max_position_embeddings=64), 5),
        "albert": (AlbertConfig(embedding_size=16, **encoder), 5),
        "llama": (tiny_llama_config(pad_token_id=0), 7), "mistral": (MistralConfig(**decoder), 7),
        "qwen2": (Qwen2Config(**decoder), 7), "gemma": (GemmaConfig(head_dim=8, **decoder), 7),
        "phi": (PhiConfig(**{k: v for k, v in decoder.items() if k != "num_key_value_heads"}), 6),
        "gpt2": (tiny_gpt2_config(pad_token_id=0), 4),  # c_attn, attn.c_proj, c_fc, mlp.c_proj
    }


@pytest.mark.parametrize("family", list(_family_configs()))
def test_default_targets_and_kinds_for_every_family(family):
    """Sequence-classification models of each family: the default targets are found in every block (ALBERT: one
    shared block), split into attention and MLP matrices, and never in the head."""
    config, per_layer = _family_configs()[family]
    model = AutoModelForSequenceClassification.from_config(config)
    targets = find_targets(model)
    layers = 1 if family == "albert" else 3
    assert len(targets) == per_layer * layers and {t.layer for t in targets} == set(range(layers))
    kinds = {t.kind for t in targets}
    assert kinds == {"attention", "mlp"}, [(t.name, t.kind) for t in targets]
    from rankwise.models import head_modules

    heads = head_modules(model)
    assert heads and not any(t.name.startswith(tuple(heads)) for t in targets)


def test_an_unknown_family_gets_the_linear_layers_it_has(capsys):
    from transformers import MptConfig

    model = AutoModelForCausalLM.from_config(MptConfig(d_model=32, n_heads=2, n_layers=2, vocab_size=1000,
                                                       max_seq_len=64))
    with pytest.raises(ConfigError) as caught:
        find_targets(model)
    message = str(caught.value)
    assert "no default targets for `mpt`" in message and "attn.Wqkv" in message and "ffn.down_proj" in message
    assert "--target_modules" in message
    assert len(find_targets(model, "all-linear")) == 2 * 4
