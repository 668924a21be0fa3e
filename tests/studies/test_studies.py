"""The published studies' command lines reproduce the published method (issue 22).

The adaptive LoRA-XS study's allocation is rewritten here from its formulas (utils/adaptive: rank_masking_trainer.py,
mask.py, schedulers.py, initialization_utils.py) as an independent reference, stepped the way its trainer steps, and
compared with rankwise's allocator at the settings `rankwise glue` defaults to.
"""

from __future__ import annotations

import argparse
import json
import shlex
import re
import sys
import types
from pathlib import Path

import pytest
import torch

from conftest import REPO, run_cli
from rankwise.adapters.masks import square_masks
from rankwise.allocation.allocator import initial_weights
from rankwise.allocation.learned import build_allocator
from rankwise.allocation.budget import RankCost
from rankwise.config import RunConfig, prepare
from rankwise.targets import TargetMatrix


# ---------------------------------------------------------------------------------------------
# The study's method, from its formulas
# ---------------------------------------------------------------------------------------------

class StudyTrainer:
    """The study's per-step state: α and memory advance after each training step (α by the scheduler's increment
    or factor over all E·S steps; memory by (end − start)/(epochs_start_to_end·S) while the epoch is in the
    schedule window — with the attribute typo fixed, as the study intended)."""

    def __init__(self, n, rank_min, rank_max, memory_start, memory_end, alpha_min, alpha_max, scheduler, epochs,
                 steps_per_epoch, epochs_memory_start=0, epochs_memory_start_to_end=0, epochs_rank_discrete=0):
        self.n, self.rank_min, self.rank_max = n, rank_min, rank_max
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.memory, self.memory_update = float(memory_start), None
        if memory_start != memory_end:
            self.memory_update = (memory_end - memory_start) / (epochs_memory_start_to_end * steps_per_epoch)
        self.epochs_memory_start, self.epochs_memory_start_to_end = epochs_memory_start, epochs_memory_start_to_end
        self.alpha, max_steps = float(alpha_min), epochs * steps_per_epoch
        if scheduler == "linear":
            increment = (alpha_max - alpha_min) / max_steps
            self.next_alpha = lambda a: a + increment
        else:
            factor = (alpha_max / alpha_min) ** (1 / max_steps)
            self.next_alpha = lambda a: a * factor
        self.epochs_rank_discrete = epochs_rank_discrete

    def ranks(self, w):
        """s_i = sqrt(r_min² + (M − n·r_min²)·softmax(w)_i)."""
        return torch.sqrt(self.rank_min ** 2 + (self.memory - self.n * self.rank_min ** 2) * torch.softmax(w, dim=0))

    def discrete(self, step):
        """The intended rule: the last `epochs_rank_discrete` epochs (the code's `==` holds only the first of them)."""
        return step // self.steps_per_epoch >= self.epochs - self.epochs_rank_discrete

    def soft_mask(self, s):
        """Σ_r p(r)·1[:r,:r] with p = softmax_r(−α·log(1 + (s − r)²)), r ∈ [r_min, r_max], τ = 0."""
        ranks = torch.arange(self.rank_min, self.rank_max + 1)
        p = torch.softmax(-self.alpha * torch.log(1 + (s - ranks) ** 2), dim=0)
        mask = torch.zeros(self.rank_max, self.rank_max, dtype=p.dtype)
        for i in range(self.rank_min, self.rank_max + 1):
            block = torch.zeros(self.rank_max, self.rank_max, dtype=p.dtype)
            block[:i, :i] = 1
            mask += p[i - self.rank_min] * block
        return mask

    def hard_mask(self, s):
        mask = torch.zeros(self.rank_max, self.rank_max)
        rank = int(torch.round(s).item())
        mask[:rank, :rank] = 1
        return mask

    def step(self, step, w):
        """(α, memory, continuous ranks, ranks, masks) used by training step `step`; then the schedules advance."""
        s = self.ranks(w)
        discrete = self.discrete(step)
        ranks = torch.round(s).int() if discrete else s
        masks = torch.stack([self.hard_mask(x) if discrete else self.soft_mask(x) for x in s])
        used = (self.alpha, self.memory, s, ranks, masks)
        epoch = step // self.steps_per_epoch
        if self.memory_update is not None and \
                self.epochs_memory_start <= epoch < self.epochs_memory_start + self.epochs_memory_start_to_end:
            self.memory += self.memory_update
        self.alpha = self.next_alpha(self.alpha)
        return used


def study_quadratic(n):
    center, sigma = n // 2, n / (2 * 10 ** 0.5)
    x = torch.linspace(0, n - 1, steps=n)
    return torch.exp(-((x - center) ** 2) / (2 * sigma ** 2))


def study_left_skewed(n):
    center = 3 * n // 4
    left, right = 3 * n / (4 * 10 ** 0.5), n / (4 * 10 ** 0.5)
    x = torch.linspace(0, n - 1, steps=n)
    return torch.where(x <= center, torch.exp(-((x - center) ** 2) / (2 * left ** 2)),
                       torch.exp(-((x - center) ** 2) / (2 * right ** 2)))


def targets(n):
    return [TargetMatrix(f"encoder.layer.{i // 4}.m{i % 4}", i // 4, "attention", 64, 64) for i in range(n)]


def glue_cfg(**kw):
    """A resolved learned LoRA-XS config at `rankwise glue`'s defaults."""
    from rankwise.studies.glue_compat import GLUE_DEFAULTS

    values = {k: v for k, v in GLUE_DEFAULTS.items() if k not in ("model", "task")}
    values.update(model="minilm", task="cola", seed=0)
    values.update(kw)
    return prepare(RunConfig(**values))


# ---------------------------------------------------------------------------------------------
# Allocation: masks, ranks, α(t) and memory(t) against the study's formulas
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["linear", "exponential"])
@pytest.mark.parametrize("memory", [None, (5_000.0, 7_000.0)])
def test_glue_defaults_reproduce_the_studys_allocation_step_by_step(scheduler, memory):
    n, steps, epochs = 12, 4, 3
    schedule = dict(memory_start=memory[0], memory_end=memory[1], epochs_memory_start=1,
                    epochs_memory_start_to_end=1) if memory else dict(rank_average=20)
    cfg = glue_cfg(rank_min=5, rank_max=30, alpha_scheduler=scheduler, num_train_epochs=epochs,
                   epochs_rank_discrete=1, **schedule)
    assert (cfg.budget_mode, cfg.rounding, cfg.alpha_schedule_span) == ("softmax", "study", "all")
    cost = RankCost.from_coefficients([(1, 0, 0)] * n)
    allocator = build_allocator(cfg, targets(n), steps, cost)
    with torch.no_grad():  # fixed weights that push three matrices past rank_max under the softmax formula
        allocator.weights.copy_(torch.linspace(-2.0, 3.0, n) ** 2 / 3)
    start, end = (memory if memory else (n * 400.0, n * 400.0))
    study = StudyTrainer(n, 5, 30, start, end, 0.5, 3.0, scheduler, epochs, steps, epochs_memory_start=1,
                         epochs_memory_start_to_end=1 if memory else 0, epochs_rank_discrete=1)
    w = allocator.weights.detach().clone()
    beyond = 0
    for step in range(epochs * steps):
        alpha, budget, s, ranks, masks = study.step(step, w)
        state = allocator.state(step)
        assert state["alpha"] == pytest.approx(alpha, rel=1e-12)
        assert state["budget"] == pytest.approx(budget, rel=1e-12)
        assert state["discrete"] == study.discrete(step)
        continuous = torch.tensor(list(state["continuous"].values()), dtype=torch.float64)
        assert torch.allclose(continuous, s.double(), atol=1e-4)  # logged to 4 decimals
        mine = square_masks(allocator.keep(step, training=True)).float()
        assert torch.allclose(mine, masks.float(), atol=1e-5), f"masks differ at step {step}"
        if state["discrete"]:
            assert list(state["hard"].values()) == [min(int(r), 30) for r in ranks]
        beyond = max(beyond, int((s > 30).sum()))
    assert beyond >= 1  # the formula's ranks past rank_max are kept, not redistributed (budget_mode softmax)
    # α is scheduled over every step: after the last step the study's scheduler reaches α_max.
    assert study.alpha == pytest.approx(3.0)
    assert allocator.schedule.alpha(epochs * steps) == pytest.approx(3.0)


def test_alpha_over_all_steps_at_three_epochs_matches_the_issues_numbers():
    # 3 epochs of 10 steps, the last discrete: at the last soft step (19) the study's α is 2.08 (linear) or 1.56
    # (exponential), where rankwise's `soft` span reaches α_max = 3.
    cost = RankCost.from_coefficients([(1, 0, 0)] * 8)
    for scheduler, at_19, rounded in (("linear", 0.5 + 2.5 * 19 / 30, 2.08), ("exponential", 0.5 * 6 ** (19 / 30),
                                                                                1.56)):
        cfg = glue_cfg(num_train_epochs=3, rank_min=5, rank_max=30, rank_average=20, alpha_scheduler=scheduler,
                       epochs_rank_discrete=1)
        allocator = build_allocator(cfg, targets(8), 10, cost)
        assert allocator.schedule.first_discrete_step == 20
        assert allocator.schedule.alpha(19) == pytest.approx(at_19) and round(at_19, 2) == rounded
        soft = build_allocator(prepare(RunConfig(**{**cfg.to_dict(), "alpha_schedule_span": "soft"})),
                                         targets(8), 10, cost)
        assert soft.schedule.alpha(19) == pytest.approx(3.0)


def test_rank_start_moves_the_budget_from_its_average_rank_to_rank_average():
    n, steps = 8, 5
    cfg = glue_cfg(num_train_epochs=6, rank_min=5, rank_max=40, rank_average=20, rank_start=40,
                   epochs_memory_start=2, epochs_memory_start_to_end=2)
    allocator = build_allocator(cfg, targets(n), steps, RankCost.from_coefficients([(1, 0, 0)] * n))
    study = StudyTrainer(n, 5, 40, n * 40 ** 2, n * 20 ** 2, 0.5, 3.0, "linear", 6, steps, epochs_memory_start=2,
                         epochs_memory_start_to_end=2)
    w = torch.zeros(n)
    for step in range(6 * steps):
        _, memory, _, _, _ = study.step(step, w)
        assert allocator.schedule.memory(step) == pytest.approx(memory)
    assert allocator.schedule.memory(0) == n * 1600 and allocator.schedule.memory(29) == n * 400


@pytest.mark.parametrize("n", list(range(1, 130)) + [96, 210, 211, 333])
def test_initialisations_equal_the_studys_for_every_n(n):
    assert torch.equal(initial_weights(n, "quadratic"), study_quadratic(n))
    assert torch.equal(initial_weights(n, "left_skewed"), study_left_skewed(n))
    assert torch.equal(initial_weights(n, "uniform"), torch.zeros(n))


# ---------------------------------------------------------------------------------------------
# `rankwise glue`: defaults, flags, optimiser, W&B
# ---------------------------------------------------------------------------------------------

def glue_args(**given):
    from rankwise.studies.glue_compat import GLUE_FLAGS

    args = argparse.Namespace(**{field: None for field, _ in GLUE_FLAGS.values()}, seed=0, wandb_disabled=True,
                              quiet=True, output_dir="runs/glue")
    args.model = "minilm"
    for key, value in given.items():
        setattr(args, key, value)
    return args


def test_glue_defaults_are_the_studys_method_and_improvements_are_opt_in():
    from rankwise.studies.glue_compat import glue_configs

    (cfg,) = glue_configs(glue_args())
    assert (cfg.budget_mode, cfg.rounding, cfg.epochs_rank_discrete, cfg.alpha_schedule_span) == \
        ("softmax", "study", 0, "all")
    assert (cfg.weight_decay, cfg.rank_allocation_weight_decay, cfg.logging_steps) == (0.01, 0.01, 20)
    (better,) = glue_configs(glue_args(budget_mode="capped", rounding="budget", alpha_schedule_span="soft",
                                       weight_decay=0.0, rank_allocation_weight_decay=0.0))
    assert (better.budget_mode, better.rounding, better.alpha_schedule_span, better.weight_decay,
            better.rank_allocation_weight_decay) == ("capped", "budget", "soft", 0.0, 0.0)
    # `rankwise train` keeps rankwise's method.
    train = prepare(RunConfig(task="cola", allocation="learned", num_train_epochs=3))
    assert (train.budget_mode, train.rounding, train.alpha_schedule_span, train.epochs_rank_discrete,
            train.weight_decay, train.rank_allocation_weight_decay) == ("capped", "budget", "soft", 1, 0.0, 0.0)


def test_glue_rank_start_is_accepted_with_the_studys_fallbacks(capsys):
    from rankwise.studies.glue_compat import glue_configs

    (cfg,) = glue_configs(glue_args(num_train_epochs=50, rank_min=5, rank_average=20.0, rank_start=40.0))
    assert cfg.rank_max == 40 and cfg.rank_start == 40 and cfg.rank_average == 20  # rank_max = rank_start
    assert (cfg.epochs_memory_start, cfg.epochs_memory_start_to_end) == (20, 20)
    assert "51-epoch runs used --epochs_memory_start 15" in capsys.readouterr().err
    (cfg,) = glue_configs(glue_args(num_train_epochs=51, rank_min=5, rank_max=50, rank_average=20.0,
                                    rank_start=40.0, epochs_memory_start=15, epochs_memory_start_to_end=10))
    assert (cfg.rank_max, cfg.epochs_memory_start, cfg.epochs_memory_start_to_end) == (50, 15, 10)
    (cfg,) = glue_configs(glue_args(rank_min=5, rank_average=20.0))
    assert cfg.rank_max == 20  # the study's other fallback: rank_max = rank_average


def test_glue_optimiser_decays_every_group_like_torch_adamw(tiny_bert_dir, tiny_glue_dir, tmp_path):
    from rankwise.train import _param_groups, setup_run

    cfg = glue_cfg(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), rank_min=2, rank_max=8, rank_average=5,
                   num_train_epochs=2, output_dir=str(tmp_path / "run"), max_train_samples=16)
    groups = {g["name"]: g for g in _param_groups(setup_run(cfg))}
    assert set(groups) == {"adapter", "head", "allocation"}
    assert {name: g["weight_decay"] for name, g in groups.items()} == {"adapter": 0.01, "head": 0.01,
                                                                       "allocation": 0.01}
    assert torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"] == 0.01  # the study's AdamW default
    plain = prepare(RunConfig(**{**cfg.to_dict(), "weight_decay": 0.0, "rank_allocation_weight_decay": 0.0}))
    assert {g["name"]: g["weight_decay"] for g in _param_groups(setup_run(plain))} == \
        {"adapter": 0.0, "head": 0.0, "allocation": 0.0}


def test_wandb_gets_alpha_memory_and_every_matrixs_ranks(monkeypatch):
    from rankwise.train import RankwiseTrainer
    from rankwise.wandb_log import allocation_values

    logged = []
    fake = types.ModuleType("wandb")
    fake.run = object()
    fake.log = lambda values, **kw: logged.append(values)
    fake.Image = lambda figure: types.SimpleNamespace(figure=figure)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    n = 6
    cfg = glue_cfg(rank_min=2, rank_max=8, rank_average=5, num_train_epochs=2, report_to="wandb")
    allocator = build_allocator(cfg, targets(n), 3, RankCost.from_coefficients([(1, 0, 0)] * n))
    with torch.no_grad():
        allocator.weights.copy_(torch.linspace(-1, 1, n))
    written = []
    trainer = types.SimpleNamespace(
        run=types.SimpleNamespace(append_jsonl=lambda name, record: written.append(record)),
        setup=types.SimpleNamespace(allocator=allocator, steps_per_epoch=3, cfg=cfg), method_hooks=None)
    RankwiseTrainer.log_allocation(trainer, 4)
    (values,) = logged
    record = allocator.state(4)
    assert values.pop("rank_masks").figure is not None  # the soft phase's mask image, checked in the next test
    assert values == allocation_values(record, 4)
    assert values["alpha"] == pytest.approx(0.5 + 2.5 * 4 / 6) and values["memory"] == n * 25
    assert values["train/global_step"] == 4
    names = [t.name for t in targets(n)]
    for i, name in enumerate(names):
        assert values[f"rank_continuous/{name}"] == record["continuous"][name]
        assert values[f"rank_hard/{name}"] == record["hard"][name]
        assert values[f"rank_allocation_{i}"] == record["continuous"][name]  # soft phase: the study's s_i
    discrete = allocation_values({**record, "discrete": True}, 5)
    assert [discrete[f"rank_allocation_{i}"] for i in range(n)] == [float(record["hard"][m]) for m in names]
    # Without an active run (or without report_to wandb) nothing is logged.
    fake.run = None
    RankwiseTrainer.log_allocation(trainer, 5)
    trainer.setup.cfg = glue_cfg(rank_min=2, rank_max=8, rank_average=5, num_train_epochs=2)
    fake.run = object()
    RankwiseTrainer.log_allocation(trainer, 5)
    assert len(logged) == 1 and len(written) == 3


def test_wandb_mask_image_is_every_matrixs_keep_probabilities_in_the_soft_phase(monkeypatch):
    """The study drew each matrix's soft mask (gray_r, 0 to 1) to W&B; rankwise draws all of them in one image:
    matrices × rank components, each pixel the keep probability q_i(k) that sets the study's M_i[a, b] = q_i(max(a, b))."""
    from rankwise.wandb_log import log_allocation_to_wandb

    logged = []
    fake = types.ModuleType("wandb")
    fake.run, fake.log = object(), lambda values, **kw: logged.append(values)
    fake.Image = lambda figure: types.SimpleNamespace(figure=figure)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    n = 6
    cfg = glue_cfg(rank_min=2, rank_max=8, rank_average=5, num_train_epochs=2, epochs_rank_discrete=1, tau=0.5)
    allocator = build_allocator(cfg, targets(n), 3, RankCost.from_coefficients([(1, 0, 0)] * n))
    with torch.no_grad():
        allocator.weights.copy_(torch.linspace(-1, 1, n))
    generator = allocator.generator.get_state()
    assert log_allocation_to_wandb(allocator.state(2), 2, allocator)
    figure = logged[0]["rank_masks"].figure
    (image,) = figure.axes[0].images
    shown = torch.as_tensor(image.get_array().data)
    s = allocator.continuous_ranks(allocator.schedule.memory(2)).detach()
    ranks = torch.arange(2, 9, dtype=torch.float64)
    p = torch.softmax(-allocator.schedule.alpha(2) * torch.log(1 + (s[:, None] - ranks) ** 2), dim=1)
    study_keep = torch.stack([torch.cat([torch.ones(2), p[i].flip(0).cumsum(0).flip(0)[1:]]) for i in range(n)])
    assert shown.shape == (n, 8) and torch.allclose(shown.double(), study_keep, atol=1e-6)
    assert torch.allclose(shown, allocator.keep(2, training=True, noise=False).float())
    masks = square_masks(shown)  # the study's own mask_<i>, r_max × r_max: Σ_r p(r)·1[:r, :r]
    block = sum(p[0, j] * torch.nn.functional.pad(torch.ones(r, r), (0, 8 - r, 0, 8 - r))
                for j, r in enumerate(range(2, 9)))
    assert torch.allclose(masks[0].double(), block.double(), atol=1e-6)
    assert (image.cmap.name, image.norm.vmin, image.norm.vmax) == ("gray_r", 0, 1)
    assert torch.equal(allocator.generator.get_state(), generator)  # a log draws no Gumbel noise (τ = 0.5 here)
    # The discrete phase (epoch 2 of 2, steps 3–5) draws no image, as the study's hard masks drew none.
    assert log_allocation_to_wandb(allocator.state(4), 4, allocator) and "rank_masks" not in logged[1]


# ---------------------------------------------------------------------------------------------
# Reports: the study's rank-vs-layer plot by component type
# ---------------------------------------------------------------------------------------------

def test_rank_by_layer_figure_has_one_line_per_component_type_with_median_ranks(tmp_path):
    import numpy as np

    from rankwise.report import build_report
    from rankwise.report.configurations import figures as plots
    from conftest import MATRICES, fake_run

    dirs = [fake_run(tmp_path / "runs", [0.4, 0.5, 0.6], allocation="learned", rank_average=20, seed=seed)
            for seed in range(3)]
    fig = plots.draw_ranks_by_layer([str(d) for d in dirs], "t")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert list(lines) == ["query", "value", "attn out", "ffn out"]  # LoRA-XS's 4 targets per layer
    hard = [json.loads((d / "summary.json").read_text())["hard_ranks"] for d in dirs]
    suffix = {"query": "attention.self.query", "value": "attention.self.value", "attn out": "attention.output.dense",
              "ffn out": "output.dense"}
    assert {n for n, _, _ in MATRICES} == {f"bert.encoder.layer.{i}.{x}" for i in range(3) for x in suffix.values()}
    for component, line in lines.items():
        assert list(line.get_xdata()) == [0, 1, 2]
        names = [f"bert.encoder.layer.{i}.{suffix[component]}" for i in range(3)]
        assert list(line.get_ydata()) == pytest.approx([np.median([h[n] for h in hard]) for n in names])
    # The report draws it for the best learned configuration.
    out = tmp_path / "report"
    build_report([tmp_path / "runs"], out)
    text = (out / "report.md").read_text()
    assert "ranks_by_layer.png" in text and (out / "ranks_by_layer.png").is_file()


# ---------------------------------------------------------------------------------------------
# LoRA Without Regret: `rankwise lr-sweep --preset lora_without_regret --results_file results.json`
# ---------------------------------------------------------------------------------------------

def lr_sweep_configs(*argv):
    from rankwise.cli import build_parser
    from rankwise.studies.lr_ratio import sweep_from_args
    from rankwise.studies.lr_ratio import expand_lr_sweep

    return expand_lr_sweep(sweep_from_args(build_parser().parse_args(["lr-sweep", *map(str, argv)])))


def test_lora_without_regret_preset_is_the_studys_regime_and_grid():
    configs = lr_sweep_configs("--preset", "lora_without_regret", "--output_dir", "/tmp/never-written")
    assert [c.learning_rate for c in configs] == [1e-4, 5e-4, 1e-3]  # main.py's --lrs default
    for cfg in configs:
        assert (cfg.method, cfg.rank, cfg.lora_alpha, cfg.alpha_policy, cfg.seed) == ("lora", 128, 256.0, "constant",
                                                                                       42)
        assert (cfg.num_train_epochs, cfg.per_device_train_batch_size) == (5, 32)
        assert (cfg.lr_scheduler, cfg.weight_decay, cfg.max_grad_norm, cfg.lora_dropout) == \
            ("constant_schedule", 0.001, 0.0, 0.0)
        assert (cfg.target_modules, cfg.freeze_head, cfg.pad_to_max_length) == ("every-linear", True, True)
    # Full fine-tuning under the preset trains every weight (the head too), at the same grid and regime.
    (full, *_) = lr_sweep_configs("--preset", "lora_without_regret", "--full-finetune", "--output_dir", "/tmp/x")
    assert (full.method, full.freeze_head, full.weight_decay, full.max_grad_norm, full.seed) == \
        ("full", False, 0.001, 0.0, 42)
    # Flags given win over the preset.
    (mine, *_) = lr_sweep_configs("--preset", "lora_without_regret", "--rank", "16", "--alpha", "32", "--epochs", "2",
                                  "--weight_decay", "0", "--freeze_head", "false", "--lrs", "3e-4",
                                  "--pad_to_max_length", "false", "--output_dir", "/x")
    assert (mine.rank, mine.lora_alpha, mine.num_train_epochs, mine.weight_decay, mine.freeze_head,
            mine.learning_rate, mine.pad_to_max_length) == (16, 32.0, 2, 0.0, False, 3e-4, False)
    # Without the preset nothing changes.
    (plain, *_) = lr_sweep_configs("--lrs", "1e-3", "--output_dir", "/x")
    assert (plain.rank, plain.lora_alpha, plain.num_train_epochs, plain.weight_decay, plain.freeze_head,
            plain.lr_scheduler, plain.max_grad_norm, plain.pad_to_max_length, plain.target_modules) == \
        (16, 32.0, 3, 0.0, False, "linear_schedule_with_warmup", 1.0, False, None)


def study_trainable_parameters(model: torch.nn.Module, rank: int) -> int:
    """What LoRA Without Regret's scripts/lora.py trains: `FullFT_or_Lora` freezes every parameter, then `inject_lora`
    gives every nn.Linear of `model.named_modules()` a LoraLayer with A (rank×in) and B (out×rank)."""
    return sum(rank * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_lora_without_regret_preset_puts_lora_on_every_linear_layer_as_the_study(tiny_bert_dir, tiny_glue_dir,
                                                                                 tmp_path):
    from transformers import BertForSequenceClassification

    from conftest import tiny_bert_config
    from rankwise.train import _param_groups, setup_run

    (cfg, *_) = lr_sweep_configs("--preset", "lora_without_regret", "--model", tiny_bert_dir, "--data_dir",
                                 tiny_glue_dir, "--task", "sst2", "--rank", "4", "--output_dir", tmp_path / "s")
    setup = setup_run(cfg)
    # The tiny BERT (hidden 32, feed-forward 64, 3 layers, 2 labels) by hand, at rank 4: per layer query, key, value
    # and attention output 4·(32+32) each, intermediate and output 4·(32+64) each; then the pooler's dense
    # 4·(32+32) and the classifier 4·(32+2), whose rank exceeds its 2 outputs as the study's 128 did its 4.
    by_hand = 3 * (4 * 4 * 64 + 2 * 4 * 96) + 4 * 64 + 4 * 34
    assert by_hand == 5768 == study_trainable_parameters(BertForSequenceClassification(tiny_bert_config()), 4)
    trainable = {n: p.numel() for n, p in setup.adapter.model.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == by_hand and all(".lora_" in n for n in trainable)  # every base weight frozen
    assert {n.split(".lora_")[0].removeprefix("base_model.model.") for n in trainable} >= {"bert.pooler.dense",
                                                                                           "classifier"}
    assert [(r.name, r.kind, r.rank) for r in setup.plan.rows[-2:]] == [("bert.pooler.dense", "head", 4),
                                                                       ("classifier", "head", 4)]
    assert (setup.plan.adapter_parameters, setup.plan.head_parameters) == (by_hand, 0)
    assert [g["name"] for g in _param_groups(setup)] == ["adapter"]  # the head's adapters train at the swept LR
    classifier = setup.adapter.model.base_model.model.classifier
    assert classifier.r["default"] == 4 and classifier.scaling["default"] == 256 / 4  # the study's α/r
    # Its adapters on the head's new, frozen weights cannot be saved as a PEFT adapter: refused before any run.
    assert run_cli("lr-sweep", "--preset", "lora_without_regret", "--model", tiny_bert_dir, "--data_dir",
                   tiny_glue_dir, "--task", "sst2", "--rank", "4", "--output_dir", tmp_path / "saved",
                   "--save_model", "true", "--dry-run") == 2
    assert not (tmp_path / "saved").exists()


def test_pad_to_max_length_pads_every_batch_and_leaves_logits_unchanged(tiny_bert_dir, tiny_glue_dir):
    """The study tokenises with padding="max_length"; under the attention mask the padding changes nothing."""
    from rankwise.data.instruct import CausalCollator
    from rankwise.data.prepare import prepare_task

    settings = dict(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="sst2", max_seq_length=64)
    padded_task = prepare_task(prepare(RunConfig(**settings, pad_to_max_length=True)))
    dynamic_task = prepare_task(prepare(RunConfig(**settings)))
    features = padded_task.train_features[:16]
    padded, dynamic = padded_task.collate(features), dynamic_task.collate(features)
    assert padded["input_ids"].shape == (16, 64) and dynamic["input_ids"].shape[1] < 64
    model = padded_task.model.eval()
    with torch.no_grad():
        logits = [model(**{k: v for k, v in batch.items() if k != "labels"}).logits for batch in (padded, dynamic)]
    assert (logits[0] - logits[1]).abs().max() < 1e-5 and logits[0].abs().max() > 1e-3
    rows = [{"input_ids": [5, 6], "attention_mask": [1, 1], "labels": [5, 6]}]
    assert CausalCollator(0, 16)(rows)["input_ids"].shape == (1, 16)  # instruction tuning pads the same way
    assert CausalCollator(0)(rows)["input_ids"].shape == (1, 2)


def test_freeze_head_keeps_the_head_out_of_the_optimiser(tiny_bert_dir, tiny_glue_dir, tmp_path):
    from rankwise.train import _param_groups, setup_run

    for method in ("lora", "loraxs"):
        cfg = RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="sst2", method=method, rank=4,
                        freeze_head=True, output_dir=str(tmp_path / method), quiet=True)
        setup = setup_run(cfg)
        assert [g["name"] for g in _param_groups(setup)] == ["adapter"]
        head = [p for n, p in setup.adapter.model.named_parameters() if ".classifier." in f".{n}." or "pooler" in n]
        assert head and not any(p.requires_grad for p in head)
        assert setup.plan.head_parameters == 0
    unfrozen = setup_run(RunConfig(model=str(tiny_bert_dir), data_dir=str(tiny_glue_dir), task="sst2", method="lora",
                                   rank=4, output_dir=str(tmp_path / "u"), quiet=True))
    assert [g["name"] for g in _param_groups(unfrozen)] == ["adapter", "head"]


def test_study_results_file_schema_keys_merge_and_never_overwrite(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    from rankwise.runs.rundir import read_json

    results = tmp_path / "results.json"
    base = ["lr-sweep", "--preset", "lora_without_regret", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir,
            "--task", "sst2", "--rank", "4", "--epochs", "2", "--batch_size", "16", "--output_dir", tmp_path / "sweep",
            "--results_file", results, "--quiet", "--no_report"]
    assert run_cli(*base, "--lrs", "1e-4", "5e-4") == 0
    data = read_json(results)
    assert list(data) == ["0.0001", "0.0005"] == [str(1e-4), str(5e-4)]  # the float's str(), sorted by value
    for lr, entry in data.items():
        assert set(entry) == {"best_val_loss", "test_acc", "train_losses", "val_losses", "meta"}
        assert len(entry["val_losses"]) == 2 and entry["best_val_loss"] == min(entry["val_losses"])
        assert len(entry["train_losses"]) == 2  # 6 steps an epoch, logging_steps 10: never empty
        assert entry["meta"]["test_acc_split"] == "dev" and entry["meta"]["learning_rate"] == float(lr)
    first = dict(data)
    # Resumed with one more learning rate: merged, the finished entries unchanged.
    assert run_cli(*base, "--lrs", "1e-4", "5e-4", "1e-3") == 0
    data = read_json(results)
    assert list(data) == ["0.0001", "0.0005", "0.001"] and {k: data[k] for k in first} == first
    before = results.read_text()
    # Another curve into the same file: refused before any run, the file untouched.
    assert run_cli(*base, "--lrs", "1e-3", "--full-finetune") == 2
    assert "holds another curve (lora r=4 alpha=256.0, seed 42, 2 epochs)" in capsys.readouterr().err
    assert results.read_text() == before
    # Several curves cannot share one results.json; a file rankwise did not write is never touched.
    assert run_cli(*base, "--lrs", "1e-3", "--include_full") == 2
    assert "this sweep has 2" in capsys.readouterr().err
    foreign = tmp_path / "theirs.json"
    foreign.write_text(json.dumps({"0.0001": {"best_val_loss": 0.2, "test_acc": 0.9, "train_losses": [],
                                             "val_losses": []}}))
    args = list(base)
    args[args.index(results)] = foreign
    assert run_cli(*args, "--lrs", "1e-3") == 2
    assert "rankwise did not write" in capsys.readouterr().err


def test_test_acc_is_test_split_accuracy_after_training_when_the_task_has_one(tmp_path):
    from rankwise.studies.lr_ratio import LRSweep, expand_lr_sweep, run_entry, write_study_results
    from rankwise.runs.rundir import write_json_atomic

    (cfg,) = expand_lr_sweep(LRSweep(ranks=[4], lrs=[1e-3], output_dir=str(tmp_path / "s"),
                                     overrides={"task": "sst2", "num_train_epochs": 3}))
    run = tmp_path / "s" / cfg.output_dir.split("/")[-1]
    run.mkdir(parents=True)
    write_json_atomic(run / "config.json", {"config": cfg.to_dict()})
    records = []
    for epoch, (loss, dev, test) in enumerate([(0.5, 0.7, 0.66), (0.4, 0.8, 0.71), (0.45, 0.78, 0.74)], 1):
        records += [{"type": "train", "step": 3 * epoch - 1, "epoch": epoch - 1 / 3, "loss": 1.0 / epoch},
                    {"type": "train", "step": 3 * epoch, "epoch": float(epoch), "loss": 0.4 / epoch},
                    {"type": "eval", "step": 3 * epoch, "epoch": epoch, "eval_loss": loss, "eval_accuracy": dev,
                     "test_loss": loss, "test_accuracy": test}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(run / "summary.json", {"status": "completed", "task": "sst2", "method": "lora",
                                             "allocation": "uniform", "seed": 0})
    entry = run_entry(cfg)
    assert entry["test_acc"] == 0.74  # the test split after training, not dev accuracy at the best epoch (0.8)
    assert entry["meta"]["test_acc_split"] == "test" and "test split" in entry["meta"]["test_acc_is"]
    # Each epoch's train loss weights its records by the steps they average (2 steps, then 1).
    assert entry["train_losses"] == pytest.approx([(2 * 1.0 + 0.4) / 3, (2 * 0.5 + 0.2) / 3, (2 / 3 + 0.4 / 3) / 3])
    assert list(json.loads(write_study_results([cfg], tmp_path / "results.json").read_text())) == ["0.001"]


# ---------------------------------------------------------------------------------------------
# adaptive-lora-placement: `rankwise placement` with train_adaptive.py / train_baseline.py flags
# ---------------------------------------------------------------------------------------------

# The study's commands (scripts/run_all_experiments.sh), after `python scripts/train_*.py`.
PLACEMENT = {
    "baseline_rank8": "--lora_rank 8 --dataset_size 200 --num_epochs 3 --batch_size 8 --learning_rate 3e-4 --seed 42 "
                      "--experiment_name baseline_rank8_official",
    "linear_decay": "--strategy linear_decay --base_rank 16 --min_rank 4 --max_rank 32 --dataset_size 200 "
                    "--num_epochs 3 --batch_size 8 --learning_rate 3e-4 --seed 42 "
                    "--experiment_name adaptive_linear_decay_official",
    "attention_heavy": "--strategy attention_heavy --base_rank 16 --min_rank 4 --max_rank 32 --dataset_size 200 "
                       "--num_epochs 3 --batch_size 8 --learning_rate 3e-4 --seed 42 "
                       "--experiment_name adaptive_attention_heavy_official",
    "empirical": "--strategy empirical --base_rank 16 --min_rank 4 --max_rank 32 --dataset_size 200 --num_epochs 3 "
                 "--batch_size 8 --learning_rate 3e-4 --seed 42 --experiment_name adaptive_empirical_official",
}
# The study's README example strategy file (24 layers, DialoGPT-medium).
README_STRATEGY = {"strategy_name": "custom",
                   "layer_ranks": [16, 16, 14, 12, 10, 8, 8, 6, 6, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4]}


def study_linear_decay(layers, base, low, high):
    start = min(max(base, low), high)
    return [max(low, min(int(start - (start - low) * (i / (layers - 1))), high)) for i in range(layers)]


def study_empirical(layers, base, low, high):
    def rank(i):
        pos = i / (layers - 1)
        return int(base * 0.6) if pos < 0.3 else int(base * 1.2) if pos < 0.7 else base
    return [max(low, min(rank(i), high)) for i in range(layers)]


def test_placement_strategies_follow_the_studys_formulas_at_its_depth():
    from rankwise.studies.placement import attention_heavy_ranks, empirical_ranks, linear_decay_ranks

    assert linear_decay_ranks(24, 16, 4, 32) == study_linear_decay(24, 16, 4, 32)
    assert linear_decay_ranks(24, 16, 4, 32)[:4] == [16, 15, 14, 14] and linear_decay_ranks(24, 16, 4, 32)[-1] == 4
    assert empirical_ranks(24, 16, 4, 32) == study_empirical(24, 16, 4, 32) == [9] * 7 + [19] * 10 + [16] * 7
    assert attention_heavy_ranks(16, 4, 32) == (16, 8)
    for layers in (1, 2, 3, 12, 30):
        assert linear_decay_ranks(layers, 40, 4, 32) == [max(4, min(int(32 - 28 * (i / (layers - 1) if layers > 1
                                                                                        else 0)), 32))
                                                         for i in range(layers)]


def placement(name, gpt2, alpaca, out, *extra):
    return ["placement", *PLACEMENT[name].split(), "--model_name", gpt2, "--train_file", alpaca, "--dataset_size", "20",
            "--output_dir", out, *extra]


def plan_ranks(args_list):
    from rankwise.cli import build_parser
    from rankwise.studies.placement import placement_config
    from rankwise.planning import build_plan, meta_model

    cfg, strategy_file = placement_config(build_parser().parse_args([str(a) for a in args_list]))
    if strategy_file is not None:  # the plan the written file will give
        path = Path(cfg.output_dir).parent / "trial.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(strategy_file["content"]))
        cfg = prepare(RunConfig(**{**cfg.to_dict(), "rank_file": str(path)}))
    plan, _ = build_plan(cfg, *meta_model(cfg))
    return cfg, {row.name: row.rank for row in plan.rows}


def test_placement_commands_as_written_apply_their_ranks(tiny_gpt2_dir, tiny_alpaca_file, tmp_path, capsys):
    out = tmp_path / "results"
    for name in PLACEMENT:
        assert run_cli(*placement(name, tiny_gpt2_dir, tiny_alpaca_file, out, "--dry_run")) == 0
        assert f"would run {out / (PLACEMENT[name].split('--experiment_name ')[1])}" in capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    cfg, ranks = plan_ranks(placement("linear_decay", tiny_gpt2_dir, tiny_alpaca_file, out))
    per_layer = study_linear_decay(3, 16, 4, 32)  # [16, 10, 4] on the tiny 3-layer GPT-2
    assert per_layer == [16, 10, 4]
    assert ranks == {n: per_layer[int(n.split(".")[2])] for n in ranks} and len(ranks) == 12
    assert (cfg.method, cfg.lora_alpha, cfg.lora_dropout, cfg.learning_rate, cfg.num_train_epochs, cfg.seed,
            cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps, cfg.max_seq_length) == \
        ("lora", 32.0, 0.1, 3e-4, 3, 42, 8, 4, 512)
    assert (cfg.prompt_format, cfg.loss_on, cfg.instruct_split, cfg.max_train_samples, cfg.weight_decay,
            cfg.warmup_ratio, cfg.alpha_policy) == ("human_assistant", "all", "first_n_90_10", 20, 0.01, 0.0,
                                                    "constant")
    _, ranks = plan_ranks(placement("empirical", tiny_gpt2_dir, tiny_alpaca_file, out))
    assert sorted(set(ranks.values())) == [9, 16, 19]  # early / middle / late of 3 layers
    _, ranks = plan_ranks(placement("attention_heavy", tiny_gpt2_dir, tiny_alpaca_file, out))
    assert {n: r for n, r in ranks.items()} == {n: 16 if ".attn." in n else 8 for n in ranks}  # mlp.c_proj: 8
    cfg, ranks = plan_ranks(placement("baseline_rank8", tiny_gpt2_dir, tiny_alpaca_file, out))
    assert cfg.allocation == "uniform" and set(ranks.values()) == {8}
    # The README's `train_baseline.py --rank 8` works too.
    args = placement("baseline_rank8", tiny_gpt2_dir, tiny_alpaca_file, out)
    args[args.index("--lora_rank")] = "--rank"
    assert plan_ranks(args)[0].rank == 8


def test_placement_strategy_json_length_check_and_resampling(tiny_gpt2_dir, tiny_alpaca_file, tmp_path, capsys):
    strategy = tmp_path / "my_strategy.json"
    strategy.write_text(json.dumps(README_STRATEGY))
    out = tmp_path / "results"
    base = ["placement", "--strategy", "custom", "--config_file", strategy, "--model_name", tiny_gpt2_dir,
            "--train_file", tiny_alpaca_file, "--dataset_size", "20", "--output_dir", out]
    assert run_cli(*base, "--dry_run") == 2
    assert "`layer_ranks` in" in (err := capsys.readouterr().err) and "has 24 entries but the model has 3 layers" in err
    assert "--resample_layer_ranks" in err and not out.exists()
    _, ranks = plan_ranks([*base, "--resample_layer_ranks"])
    assert {int(n.split(".")[2]): r for n, r in ranks.items()} == {0: 16, 1: 4, 2: 4}
    # A list of the model's depth is applied as it is; --custom_ranks (a JSON string) too.
    strategy.write_text(json.dumps({"strategy_name": "custom", "layer_ranks": [12, 8, 4]}))
    _, ranks = plan_ranks(base)
    assert {int(n.split(".")[2]): r for n, r in ranks.items()} == {0: 12, 1: 8, 2: 4}
    custom = [a for a in base if a not in ("--config_file", strategy)] + ["--custom_ranks", "[6, 5, 4]"]
    _, ranks = plan_ranks(custom)
    assert {int(n.split(".")[2]): r for n, r in ranks.items()} == {0: 6, 1: 5, 2: 4}
    from rankwise.allocation.static import resample_layer_ranks

    assert resample_layer_ranks([4, 8], 5) == [4, 5, 6, 7, 8] and resample_layer_ranks([1, 2, 3, 4, 5], 3) == [1, 3, 5]


def test_placement_data_setup_is_the_studys(tiny_gpt2_dir, tmp_path):
    from rankwise.data.instruct import encode_instruct, load_alpaca, split_examples
    from rankwise.models import load_tokenizer

    records = [{"instruction": f"say {w}", "input": "ignored" if i % 2 else "", "output": f"{w} {w}"}
               for i, w in enumerate(["cat", "dog", "sun", "tree", "book", "red", "big", "mat", "sat", "ran", "who",
                                      "what"])]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(records))
    examples = load_alpaca(path)
    train, held_out = split_examples(examples, eval_size=200, max_train_samples=10, how="first_n_90_10")
    assert [e.index for e in train] == list(range(9)) and [e.index for e in held_out] == [9]  # file order, 90/10
    tokenizer = load_tokenizer(str(tiny_gpt2_dir))
    features, _ = encode_instruct(examples[:3], tokenizer, 512, prompt_format="human_assistant", loss_on="all")
    for feature, record in zip(features, records):
        text = f"Human: {record['instruction']}\nAssistant: {record['output']}"  # no input, no EOS
        assert feature["input_ids"] == tokenizer(text)["input_ids"]
        assert feature["labels"] == feature["input_ids"]  # loss on every token
    response_only, _ = encode_instruct(examples[:3], tokenizer, 512, prompt_format="human_assistant")
    assert all(-100 in f["labels"] and f["labels"][-1] != -100 for f in response_only)
    default, _ = encode_instruct(examples[:1], tokenizer, 512)
    assert default[0]["input_ids"][:3] == tokenizer(examples[0].prompt)["input_ids"][:3]  # the Alpaca prompt stays


def test_placement_command_trains_a_few_steps(tiny_gpt2_dir, tiny_alpaca_file, tmp_path):
    from rankwise.runs.rundir import read_summary

    out = tmp_path / "results"
    args = placement("linear_decay", tiny_gpt2_dir, tiny_alpaca_file, out, "--max_steps", "2", "--quiet")
    assert run_cli(*args) == 0
    run = out / "adaptive_linear_decay_official"
    summary = read_summary(run)
    assert summary["status"] == "completed" and summary["steps"] == 2
    written = json.loads(next((out / "layer_ranks").glob("linear_decay_*.json")).read_text())
    assert written == {"strategy_name": "linear_decay", "layer_ranks": [16, 10, 4]}
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["eval_record_indices"] == [18, 19]  # the first 20 records, the last 2 held out
    assert {m["rank"] for m in json.loads((run / "ranks.json").read_text())["matrices"]} == {16, 10, 4}
    assert not (run / "adapter").exists()  # the study saved no model unless --save_model
    assert run_cli(*args) == 0  # again: finished, skipped


# ---------------------------------------------------------------------------------------------
# README: every "their command → our command" row runs (a dry run on a tiny model of the study's depth)
# ---------------------------------------------------------------------------------------------

def readme_rows(study: str) -> list[tuple[str, list[str]]]:
    """(their command, our command as argv after `rankwise`) of the README table marked `<!-- studies: study -->`."""
    import re
    import shlex

    text = (REPO / "README.md").read_text()
    table = text.split(f"<!-- studies: {study} -->\n", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        theirs, ours = [c.strip() for c in line.strip("|").split(" | ")]
        command = re.fullmatch(r"`rankwise (.*)`", ours).group(1)
        rows.append((theirs, shlex.split(command)))
    return rows


@pytest.fixture(scope="module")
def study_depth_models(tmp_path_factory):
    """Tiny random models with the studies' layer counts: RoBERTa with 24 layers (96 LoRA-XS matrices, as
    roberta-large), BERT with hidden size 128 (rank 128 fits), GPT-2 with 24 layers (DialoGPT-medium's)."""
    from transformers import AutoModelForCausalLM, BertModel, RobertaModel

    from conftest import minilm_tokenizer, tiny_bert_config, tiny_gpt2_config, tiny_roberta_config

    root = tmp_path_factory.mktemp("study-models")
    torch.manual_seed(0)
    models = {"roberta24": RobertaModel(tiny_roberta_config(hidden_size=64, num_hidden_layers=24,
                                                            intermediate_size=128)),
              "bert128": BertModel(tiny_bert_config(hidden_size=128, intermediate_size=256, num_hidden_layers=2)),
              "gpt2_24": AutoModelForCausalLM.from_config(tiny_gpt2_config(n_layer=24, bos_token_id=101,
                                                                           eos_token_id=102))}
    for name, model in models.items():
        model.save_pretrained(root / name)
        minilm_tokenizer().save_pretrained(root / name)
    return {name: str(root / name) for name in models}


@pytest.mark.parametrize("study", ["glue", "lr_sweep", "placement"])
def test_every_readme_row_runs(study, study_depth_models, tiny_glue_dir, tiny_alpaca_file, tmp_path, monkeypatch,
                               capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_strategy.json").write_text(json.dumps(README_STRATEGY))
    machine = {"glue": ["--model", study_depth_models["roberta24"], "--data_dir", tiny_glue_dir, "--output_dir",
                        "runs", "--dry_run"],
               "lr_sweep": ["--task", "sst2", "--model", study_depth_models["bert128"], "--data_dir", tiny_glue_dir,
                            "--output_dir", "sweep", "--dry-run"],
               "placement": ["--model_name", study_depth_models["gpt2_24"], "--train_file", tiny_alpaca_file,
                             "--dry_run"]}[study]
    rows = readme_rows(study)
    assert len(rows) >= 5
    compared = 0
    for theirs, ours in rows:
        assert ours[0] == {"glue": "glue", "lr_sweep": "lr-sweep", "placement": "placement"}[study]
        code = run_cli(*ours, *machine)
        assert code == 0, f"{theirs} → rankwise {' '.join(ours)}: {capsys.readouterr().err}"
        out = capsys.readouterr().out
        assert ("would run" in out) if study != "lr_sweep" else ("lr-sweep:" in out)
        command = re.match(r"`(\S+\.py)([^`]*)`", theirs)  # their command, as written in the table
        if command is not None:
            flags = [a for a in shlex.split(command.group(2)) if a.startswith("--")]
            assert all(flag in ours for flag in flags), (theirs, flags)
            compared += 1
    assert compared >= len(rows) - 1  # every row but the one that names rankwise's own method
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_strategy.json"]  # dry runs write nothing


@pytest.mark.parametrize("command", ["train", "glue", "lr-sweep", "placement", "plan"])
def test_help_pages_render(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(command, "--help")
    assert exit_info.value.code == 0 and "usage: rankwise" in capsys.readouterr().out


@pytest.mark.parametrize("values,field,expected", [
    (dict(rank_start=40), "rank_start", "(40) is outside [rank_min, rank_max] = [5, 30]"),
    (dict(rank_start=20, memory_start=9000.0), "rank_start", "and --memory_start both set the starting budget"),
    (dict(rank_start=25, rank_average=20), "epochs_memory_start_to_end",
     "must be at least 1 when --rank_start (25) differs from --rank_average (20)"),
    (dict(rank_allocation_weight_decay=-0.1), "rank_allocation_weight_decay", "must be >= 0"),
    (dict(alpha_schedule_span="every"), "alpha_schedule_span", "unknown value `every`"),
])
def test_bad_study_options_are_refused_with_the_field_named(values, field, expected):
    from rankwise.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        prepare(RunConfig(task="cola", allocation="learned", rank_min=5, rank_max=30, num_train_epochs=4, **values))
    assert error.value.field == field and expected in str(error.value)
    with pytest.raises(ConfigError, match="only applies to --allocation learned"):
        prepare(RunConfig(task="cola", rank_start=20))
    with pytest.raises(ConfigError, match="only applies to --task alpaca"):
        prepare(RunConfig(task="cola", prompt_format="human_assistant"))
