import json

import pytest
import torch

from rankwise.allocation import PlanContext, get_strategy, static
from rankwise.methods import get_method
from rankwise.config import RunConfig, resolve_defaults
from rankwise.errors import ConfigError
from rankwise.targets import TargetMatrix


def layers(n_layers=10, kinds=("attention", "attention", "mlp")):
    return [TargetMatrix(f"model.layers.{l}.{k}{i}", l, k, 64, 64) for l in range(n_layers) for i, k in enumerate(kinds)]


def test_uniform():
    assert static.uniform(layers(2), 7) == [7] * 6


def test_linear_decay_endpoints_and_rounding():
    ranks = static.linear_decay(layers(5, kinds=("attention",)), 16, 4)
    assert ranks == [16, 13, 10, 7, 4]


def test_attention_heavy():
    assert static.attention_heavy(layers(1), 16, 8) == [16, 16, 8]


def test_empirical_depth_bands():
    ranks = static.empirical(layers(10, kinds=("mlp",)), 10)
    # depth l/10: layers 0-2 early (<30%), 3-6 middle (<70%), 7-9 late
    assert ranks == [6, 6, 6, 12, 12, 12, 12, 10, 10, 10]


def test_custom_layer_ranks_and_module_ranks(tmp_path):
    t = layers(3)
    assert static.custom(t, {"layer_ranks": [4, 8, 2]}, 5) == [4, 4, 4, 8, 8, 8, 2, 2, 2]
    spec = {"layer_ranks": [4, 8, 2], "module_ranks": {r"layers\.1\..*mlp": 30, r"attention0$": 1}}
    assert static.custom(t, spec, 5) == [1, 4, 4, 1, 8, 30, 1, 2, 2]
    assert static.custom(t, {"module_ranks": {"mlp": 9}}, 5) == [5, 5, 9] * 3


def test_custom_errors_name_the_problem():
    t = layers(3)
    with pytest.raises(ConfigError, match="has 2 entries but the model has 3 layers"):
        static.custom(t, {"layer_ranks": [4, 8]}, 5)
    with pytest.raises(ConfigError, match="`nope` .* match no target"):
        static.custom(t, {"module_ranks": {"nope": 3}}, 5)
    with pytest.raises(ConfigError, match="positive integer"):
        static.custom(t, {"layer_ranks": [4, 0, 2]}, 5)


def test_rank_file_yaml_and_json(tmp_path):
    (tmp_path / "r.yaml").write_text("layer_ranks: [1, 2, 3]\n")
    (tmp_path / "r.json").write_text(json.dumps({"module_ranks": {"mlp": 4}}))
    assert static.load_rank_file(tmp_path / "r.yaml") == {"layer_ranks": [1, 2, 3]}
    assert static.load_rank_file(tmp_path / "r.json") == {"module_ranks": {"mlp": 4}}
    (tmp_path / "bad.json").write_text(json.dumps({"ranks": [1]}))
    with pytest.raises(ConfigError, match="layer_ranks"):
        static.load_rank_file(tmp_path / "bad.json")


@pytest.mark.parametrize("method", ["loraxs", "lora"])
def test_match_budget_keeps_shape_and_meets_uniform_budget(method):
    t = [TargetMatrix(f"model.layers.{l}.m{i}", l, "attention" if i < 2 else "mlp", 64, 256 if i == 2 else 64)
         for l in range(6) for i in range(3)]
    cfg = resolve_defaults(RunConfig(method=method, allocation="linear_decay", rank_first=16, rank_last=4, rank=8,
                                     match_budget=True))
    cost = get_method(method).rank_cost(t)
    ranks = get_strategy(cfg.allocation).plan(cfg, PlanContext(t, get_method(method), None, [])).ranks
    budget = cost.total(8)
    used = cost.total(torch.tensor(ranks, dtype=torch.float64))
    assert used <= budget
    step = max(float(cost.cost(torch.tensor(r + 1.0))[i] - cost.cost(torch.tensor(float(r)))[i]) for i, r in enumerate(ranks))
    assert budget - used < step  # within one rank increment of the budget
    assert ranks[0] > ranks[-1]  # still decays
