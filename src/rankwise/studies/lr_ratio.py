"""The LR-ratio study ("LoRA Without Regret"): a learning-rate sweep over ranks, alpha policies and seeds,
with full fine-tuning as the reference, and results files in the public reproduction's schema.

`expand_lr_sweep(sweep)` turns one `LRSweep` into validated `RunConfig`s, one per (method, rank, alpha
policy, seed, learning rate), each in its own run directory `<output_dir>/<run_name(cfg)>`, so a restarted
sweep skips finished points (`rankwise.sweep.run_sweep`). `write_results` then writes one file per
(method, rank, alpha, alpha policy, seed), keyed by learning rate as the reproduction's `results.json` is:

    {"1e-4": {"best_val_loss": 0.31, "test_acc": 0.87, "train_losses": [...], "val_losses": [...],
              "meta": {"method": "lora", "rank": 16, "alpha": 32, "alpha_policy": "constant", ...}}, ...}

`test_acc` is the accuracy on the task's test split after training, as in the reproduction, when the task has
a labelled one; otherwise (GLUE: test labels are hidden) the accuracy on the dev set (the same split as the
validation loss) at the epoch of `best_val_loss`; `meta.test_acc_split` says which. `meta` sits inside each entry,
so every top-level key is a learning rate and the reproduction's own tools (`float(key)`) still read the file.
`write_study_results` writes the reproduction's own `results.json` for one curve (keys: the learning rate's
`str()`, "0.0001"), and `PRESETS["lora_without_regret"]` is its training regime and grid.

Alpha policies across the ranks of a sweep (`--alpha ALPHA --rank REF`):
    constant  every rank gets α = ALPHA; the update scale α/r falls as 1/r (LoRA Without Regret's setting)
    ratio     rank r gets α = (ALPHA/REF)·r, so the scale α/r = ALPHA/REF at every rank
    rslora    every rank gets α = ALPHA with rsLoRA's scale α/√r
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..config import FIELDS, RunConfig, config_from_dict, prepare
from ..errors import ConfigError
from ..lr_curves import adapter_scale, curve_identity, format_lr, head_lr_mode, identity_id
from ..methods import FULL_FINETUNING, METHODS, get_method
from ..runs.naming import run_name
from ..runs.rundir import read_json, read_jsonl, write_json_atomic
from ..runs.state import finished_summary
from ..sweep import describe_runs

ALPHA_POLICIES = ("constant", "ratio", "rslora")
# Methods an LR sweep compares with full fine-tuning: the ones with a default grid.
ADAPTER_METHODS = tuple(m for m in METHODS if get_method(m).lr_range and get_method(m).trains_adapter)

# Default grids: 4 log-spaced points per decade (7 per decade and a half). Full fine-tuning and LoRA get
# separate grids, a decade apart, so that both optima are interior when the ratio is ~10x.
POINTS_PER_DECADE = 4
DEFAULT_LR_RANGES = {m: get_method(m).lr_range for m in METHODS if get_method(m).lr_range}

TEST_ACC_NOTE = ("test_acc is accuracy on the dev set at the epoch of best_val_loss (the task has no labelled test "
                 "split, e.g. GLUE's test labels are hidden, so the dev set serves as validation and test)")
TEST_SPLIT_NOTE = "test_acc is accuracy on the task's test split after training (the study's)"

# Fields an LR sweep sets per point; the rest of RunConfig passes through unchanged.
SWEPT_FIELDS = ("method", "rank", "lora_alpha", "alpha_policy", "seed", "learning_rate", "output_dir")


def round_lr(lr: float) -> float:
    """Three significant digits, so grid values print and name runs cleanly (3.16e-4, not 3.1622776e-4)."""
    return float(f"{lr:.3g}")


def log_grid(low: float, high: float, per_decade: int = POINTS_PER_DECADE) -> list[float]:
    """Learning rates 10^(k/per_decade) from `low` to `high` inclusive, rounded to 3 significant digits."""
    if not (0 < low <= high):
        raise ValueError(f"need 0 < low <= high, got {low}, {high}")
    first = math.ceil(round(math.log10(low) * per_decade, 6))
    last = math.floor(round(math.log10(high) * per_decade, 6))
    return [round_lr(10 ** (k / per_decade)) for k in range(first, last + 1)]


def default_lrs(method: str) -> list[float]:
    return log_grid(*DEFAULT_LR_RANGES[method])


# ---------------------------------------------------------------------------------------------
# Presets: a published study's regime and grid in one flag
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    """A study's defaults for `rankwise lr-sweep --preset NAME`: its sweep flags (`sweep`: lrs, epochs, batch_size,
    seed, rank, alpha), its training regime for every point (`overrides`: RunConfig fields) and for adapter points
    only (`adapter_overrides`). A flag given on the command line wins over the preset."""

    description: str
    sweep: dict[str, Any]
    overrides: dict[str, Any]
    adapter_overrides: dict[str, Any]
    data_hint: str


PRESETS = {
    # The "LoRA Without Regret" reproduction (Brokttv/Lora-Without-Regret): main.py's defaults (--lrs 1e-4 5e-4
    # 1e-3, --epochs 5, --rank 128, --alpha 256, --batch_size 32, --seed 42) and its training loop: AdamW with weight
    # decay 0.001 at a constant learning rate, no gradient clipping. scripts/lora.py: `FullFT_or_Lora` freezes every
    # parameter, then `inject_lora` wraps every nn.Linear of `model.named_modules()` (the head's `pre_classifier` and
    # `classifier` included) in a LoraLayer, α/r·B·A with A uniform ±1/√in and B = 0: `every-linear` with a frozen
    # head, so the trainable parameters are Σ r·(in+out) over every linear layer. scripts/data.py tokenises with
    # `padding="max_length"` (the tokenizer's model_max_length, 512 for distilbert-base-uncased): pad_to_max_length.
    # Full fine-tuning trains all. The optimiser settings are the issue-22 audit's reading of main.py (the stored
    # copy of the repository holds scripts/lora.py, data.py and utils.py, not main.py).
    "lora_without_regret": Preset(
        description="LoRA Without Regret reproduction: constant LR, AdamW weight decay 0.001, no clipping, LoRA on "
                    "every linear layer (the head's too) with every base weight frozen, inputs padded to "
                    "--max_seq_length; --lrs 1e-4 5e-4 1e-3, 5 epochs, rank 128, alpha 256, batch 32, seed 42",
        sweep={"lrs": [1e-4, 5e-4, 1e-3], "epochs": 5, "batch_size": 32, "seed": 42, "rank": 128, "alpha": 256.0},
        overrides={"lr_scheduler": "constant_schedule", "weight_decay": 0.001, "max_grad_norm": 0.0,
                   "warmup_ratio": 0.0, "lora_dropout": 0.0, "pad_to_max_length": True},
        adapter_overrides={"target_modules": "every-linear", "freeze_head": True},  # targets.EVERY_LINEAR
        data_hint="the study's data: --task text --dataset ag_news --max_seq_length 512 (train: the first 10,000 of "
                  "a 90/10 split of ag_news train with seed 36; validation: the first 2,000 of the held-out tenth; "
                  "test: ag_news test) with --model distilbert-base-uncased"),
}


def alpha_for(policy: str, alpha: float, rank: int, reference_rank: int) -> float:
    """The α a rank-`rank` run gets under `policy` (see the module docstring)."""
    if policy == "ratio":
        return alpha * rank / reference_rank
    return float(alpha)


# ---------------------------------------------------------------------------------------------
# The sweep and its expansion
# ---------------------------------------------------------------------------------------------

@dataclass
class LRSweep:
    """One LR-ratio study. `method` is the adapter swept over `ranks` × `alpha_policies` (or `full`);
    `include_full` adds full fine-tuning on `full_lrs` as the reference. `lrs`/`full_lrs` default to the
    method's grid. `overrides` are any other RunConfig fields (task, model, epochs, subset sizes, ...)."""

    method: str = "lora"
    ranks: list[int] = field(default_factory=lambda: [16])
    alpha: float = 32.0
    reference_rank: int | None = None  # the `ratio` policy's REF; default: the middle of `ranks`
    alpha_policies: list[str] = field(default_factory=lambda: ["constant"])
    seeds: list[int] = field(default_factory=lambda: [0])
    lrs: list[float] | None = None
    include_full: bool = False
    full_lrs: list[float] | None = None
    tie_head_lr: bool = True  # head LR = swept LR (unless overrides set cls_learning_rate)
    output_dir: str = "runs/lr_sweep"
    overrides: dict[str, Any] = field(default_factory=dict)
    adapter_overrides: dict[str, Any] = field(default_factory=dict)  # for adapter points only (not full FT)

    @property
    def ref_rank(self) -> int:
        if self.reference_rank is not None:
            return self.reference_rank
        ranks = sorted(self.ranks)
        return ranks[len(ranks) // 2]


def _check_repeats(sweep: LRSweep) -> None:
    """A value listed twice would be run once: refused, so the sweep is the one asked for."""
    for name, values in (("lrs", sweep.lrs), ("full_lrs", sweep.full_lrs), ("ranks", sweep.ranks),
                         ("seeds", sweep.seeds), ("alpha_policy", sweep.alpha_policies)):
        values = list(values or [])
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
            raise ConfigError(name, f"lists {twice:g} twice ({shown})" if isinstance(twice, float) else
                              f"lists {twice} twice ({shown})", "List each value once")


def _check_sweep(sweep: LRSweep) -> None:
    _check_repeats(sweep)
    methods = (*ADAPTER_METHODS, FULL_FINETUNING)
    if sweep.method not in methods:
        raise ConfigError("method", f"unknown value `{sweep.method}`", f"Choose one of: {', '.join(methods)}")
    for policy in sweep.alpha_policies:
        if policy not in ALPHA_POLICIES:
            raise ConfigError("alpha_policy", f"unknown value `{policy}`",
                              f"Choose from: {', '.join(ALPHA_POLICIES)} (constant α, constant α/r, rsLoRA)")
    for name, values in (("lrs", sweep.lrs), ("full_lrs", sweep.full_lrs)):
        if values is None:
            continue
        if not values:
            raise ConfigError(name, "is empty", "Give at least one learning rate, or omit it for the default grid")
        bad = [v for v in values if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ConfigError(name, f"learning rates must be positive and finite, got {bad[0]}")
    if get_method(sweep.method).trains_adapter:
        if not sweep.ranks:
            raise ConfigError("ranks", "is empty", "Give at least one rank, e.g. --ranks 4 16 64")
        bad = [r for r in sweep.ranks if r < 1]
        if bad:
            raise ConfigError("ranks", f"ranks must be positive integers, got {bad[0]}")
        if sweep.reference_rank is not None and sweep.reference_rank < 1:
            raise ConfigError("rank", f"must be a positive integer, got {sweep.reference_rank}")
        if not (math.isfinite(sweep.alpha) and sweep.alpha > 0):
            raise ConfigError("alpha", f"must be positive and finite, got {sweep.alpha}")
    if not sweep.seeds:
        raise ConfigError("seeds", "is empty", "Give at least one seed, e.g. --seeds 0 1")
    for name in SWEPT_FIELDS:
        if name in sweep.overrides or name in sweep.adapter_overrides:
            raise ConfigError(name, "is set by the LR sweep itself", "Use the lr-sweep flags for it")
    if "allocation" in sweep.overrides and sweep.overrides["allocation"] != FIELDS["allocation"].default:
        raise ConfigError("allocation", f"`{sweep.overrides['allocation']}`: an LR sweep compares uniform ranks",
                          "Drop --allocation (each rank of --ranks is used for every matrix)")


def _point(sweep: LRSweep, method: str, lr: float, seed: int, rank: int | None = None,
           alpha: float | None = None, policy: str | None = None) -> RunConfig:
    values: dict[str, Any] = {"save_model": False, **sweep.overrides, "method": method, "learning_rate": lr,
                              "seed": seed}
    if get_method(method).trains_adapter:
        values.update(sweep.adapter_overrides)
        values.update(rank=rank, lora_alpha=alpha, alpha_policy=policy)
    if sweep.tie_head_lr and values.get("cls_learning_rate") is None:
        values["cls_learning_rate"] = lr
    cfg = prepare(config_from_dict(values, source="lr-sweep arguments"))
    cfg.output_dir = str(Path(sweep.output_dir) / run_name(cfg))
    return cfg


def expand_lr_sweep(sweep: LRSweep) -> list[RunConfig]:
    """One validated RunConfig per point, in run order: for each seed, the adapter curves (rank × alpha
    policy) then full fine-tuning, each over its learning rates. Raises ConfigError before any work."""
    _check_sweep(sweep)
    configs: list[RunConfig] = []
    main_lrs = list(sweep.lrs or default_lrs(sweep.method))  # repeats refused by _check_sweep
    full_lrs = list(sweep.full_lrs or default_lrs(FULL_FINETUNING))
    for seed in sweep.seeds:
        if not get_method(sweep.method).trains_adapter:
            configs += [_point(sweep, sweep.method, lr, seed) for lr in main_lrs]
            continue
        for policy in sweep.alpha_policies:
            for rank in sweep.ranks:
                alpha = alpha_for(policy, sweep.alpha, rank, sweep.ref_rank)
                configs += [_point(sweep, sweep.method, lr, seed, rank, alpha, policy) for lr in main_lrs]
        if sweep.include_full:
            configs += [_point(sweep, FULL_FINETUNING, lr, seed) for lr in full_lrs]
    unique: dict[str, RunConfig] = {}
    for cfg in configs:  # rank 16 under `constant` and `ratio` can be the very same run
        kept = unique.setdefault(cfg.output_dir, cfg)
        differ = sorted(_differences(kept, cfg) - {"alpha_policy"})
        if differ:  # two points the sweep asked for would be one run
            shown = "; ".join(f"{n}: {getattr(kept, n)!r} and {getattr(cfg, n)!r}" for n in differ)
            raise ConfigError("lrs" if differ == ["learning_rate"] else differ[0],
                              f"two points would share the run directory `{cfg.output_dir}` ({shown}); run names keep "
                              "3 significant digits of a learning rate",
                              "Give values that differ in their first 3 significant digits")
    return list(unique.values())


def _differences(a: RunConfig, b: RunConfig) -> set[str]:
    return {name for name, value in a.to_dict().items() if getattr(b, name) != value}


# ---------------------------------------------------------------------------------------------
# Results files in the reproduction's schema
# ---------------------------------------------------------------------------------------------

def results_basename(cfg: RunConfig) -> str:
    """`results_lora_r16_alpha32_constant_seed0`, `results_full_seed0`."""
    if not get_method(cfg.method).trains_adapter:
        return f"results_{cfg.method}_seed{cfg.seed}"
    return f"results_{cfg.method}_r{cfg.rank}_alpha{cfg.lora_alpha:g}_{cfg.alpha_policy}_seed{cfg.seed}"


def _epoch_means(train_records: list[dict], epochs: int) -> list[float]:
    """Mean training loss of each epoch: the logged losses, each weighted by the steps it averages (a record
    covers the steps since the one before; training logs at every epoch's end, so none spans two epochs)."""
    means, previous, covered = [], 0, []
    for r in sorted(train_records, key=lambda r: r["step"]):
        covered.append((r, max(r["step"] - previous, 1)))
        previous = r["step"]
    for epoch in range(1, epochs + 1):
        values = [(r["loss"], w) for r, w in covered if epoch - 1 < r["epoch"] <= epoch and r.get("loss") is not None]
        if values:
            means.append(sum(v * w for v, w in values) / sum(w for _, w in values))
    return means


def test_split_accuracy(evals: list[dict], summary: dict) -> float | None:
    """Accuracy on the task's test split after training (the last evaluation's `test_accuracy`, or the summary's),
    or None when the task has no labelled test split."""
    for record in reversed(evals):
        if record.get("test_accuracy") is not None:
            return record["test_accuracy"]
    return (summary.get("test") or {}).get("test_accuracy")


def run_entry(cfg: RunConfig) -> dict | None:
    """The results entry of one finished run (completed or diverged), or None if it has not finished or was
    trained with another config (`sweep.config_conflicts`). A diverged run has `best_val_loss` and `test_acc`
    null (never NaN): it has no usable optimum."""
    run_dir = Path(cfg.output_dir)
    summary = finished_summary(cfg)
    if summary is None:
        return None
    records = read_jsonl(run_dir / "metrics.jsonl")
    evals = [r for r in records if r.get("type") == "eval" and r.get("step", 1) != 0]  # not --eval_on_start's
    val_losses = [r.get("eval_loss") for r in evals]
    completed = summary["status"] == "completed" and val_losses and all(v is not None for v in val_losses)
    best_val_loss, test_acc, best_epoch = None, None, None
    accuracy_on_test = test_split_accuracy(evals, summary)
    test_split = accuracy_on_test is not None
    if completed:
        best_index = min(range(len(val_losses)), key=val_losses.__getitem__)
        best_val_loss, best_epoch = val_losses[best_index], evals[best_index]["epoch"]
        test_acc = accuracy_on_test if test_split else evals[best_index].get("eval_accuracy")
    identity = curve_identity(cfg)
    adapters = get_method(cfg.method).trains_adapter
    meta = {
        "method": cfg.method, "task": cfg.task, "model": cfg.model, "seed": cfg.seed,
        "learning_rate": cfg.learning_rate, "head_lr": head_lr_mode(cfg),
        "rank": cfg.rank if adapters else None,
        "alpha": cfg.lora_alpha if adapters else None,
        "alpha_policy": cfg.alpha_policy if adapters else None,
        "scale": adapter_scale(cfg.alpha_policy, cfg.lora_alpha, cfg.rank) if adapters else None,
        "epochs": cfg.num_train_epochs, "batch_size": cfg.per_device_train_batch_size,
        "status": summary["status"], "message": summary.get("message"), "best_epoch": best_epoch,
        "run_dir": run_dir.name, "curve_id": identity_id(identity),
        "test_acc_split": "test" if test_split else "dev",
        "test_acc_is": TEST_SPLIT_NOTE if test_split else TEST_ACC_NOTE,
    }
    return {"best_val_loss": best_val_loss, "test_acc": test_acc,
            "train_losses": _epoch_means([r for r in records if r.get("type") == "train"], cfg.num_train_epochs),
            "val_losses": val_losses, "meta": meta}


def _file_curve_id(data: dict) -> str | None:
    for entry in data.values():
        if isinstance(entry, dict) and isinstance(entry.get("meta"), dict):
            return entry["meta"].get("curve_id")
    return None


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive lock on the results files of `directory` (two sweeps into one folder may finish at once)."""
    import fcntl

    with open(directory / ".results.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def results_path(directory: Path, basename: str, curve_id: str) -> Path:
    """`<basename>.json` unless it already holds a different curve (other task, epochs, ...); then the
    first `<basename>_2.json`, `_3`, ... that holds this curve or is free. A file is never clobbered."""
    for index in range(1, 1000):
        path = directory / (f"{basename}.json" if index == 1 else f"{basename}_{index}.json")
        if not path.exists():
            return path
        try:
            existing = read_json(path)
        except (OSError, json.JSONDecodeError):
            continue  # unreadable: leave it alone
        if isinstance(existing, dict) and (not existing or _file_curve_id(existing) == curve_id):
            return path
    raise RuntimeError(f"no free results file name for {basename} in {directory}")


def write_results(configs: list[RunConfig], directory: str | Path) -> list[Path]:
    """Merge the finished points of `configs` into their results files in `directory`; return the
    files written. Entries for learning rates not in `configs` are kept; a point's entry is refreshed
    from its run directory (the source of truth). Written atomically, under a lock."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    curves: dict[tuple[str, str], list[RunConfig]] = {}
    for cfg in configs:
        curves.setdefault((results_basename(cfg), identity_id(curve_identity(cfg))), []).append(cfg)
    written = []
    with _locked(directory):
        for (basename, curve_id), points in curves.items():
            entries = {format_lr(cfg.learning_rate): entry for cfg in points if (entry := run_entry(cfg))}
            if not entries:
                continue
            path = results_path(directory, basename, curve_id)
            merged = read_json(path) if path.exists() else {}
            merged.update(entries)
            merged = dict(sorted(merged.items(), key=lambda item: float(item[0])))
            if not path.exists() or read_json(path) != json.loads(json.dumps(merged)):
                write_json_atomic(path, merged)
            written.append(path)
    return written


def describe(cfg: RunConfig) -> str:
    """`LoRA r=16 α=32 (constant)`, `full fine-tuning`."""
    method = get_method(cfg.method)
    if not method.trains_adapter:
        return method.title
    return f"{method.title} r={cfg.rank} α={cfg.lora_alpha:g} ({cfg.alpha_policy})"



# ---------------------------------------------------------------------------------------------
# The study's own results.json (`--results_file`)
# ---------------------------------------------------------------------------------------------

def study_key(lr: float) -> str:
    """The study's results.json key of a learning rate: the float's `str()` (`0.0001`, `0.0005`, `1e-05`)."""
    return str(float(lr))


def _curves(configs: list[RunConfig]) -> dict[str, list[RunConfig]]:
    curves: dict[str, list[RunConfig]] = {}
    for cfg in configs:
        curves.setdefault(identity_id(curve_identity(cfg)), []).append(cfg)
    return curves


def _study_file_curve(path: Path) -> tuple[dict, str | None]:
    """(contents, curve id) of an existing study-format results file; ConfigError when it cannot be merged into."""
    if path.is_dir():
        raise ConfigError("results_file", f"`{path}` is a directory", "Give a file name such as results.json")
    try:
        data = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("results_file", f"`{path}` exists and is not a JSON results file ({exc})",
                          "Give another --results_file; rankwise never overwrites a file it did not write") from None
    if not isinstance(data, dict):
        raise ConfigError("results_file", f"`{path}` holds a {type(data).__name__}, not a results mapping",
                          "Give another --results_file")
    curve = _file_curve_id(data)
    if data and curve is None:
        raise ConfigError("results_file", f"`{path}` holds results rankwise did not write (no `meta` in its entries)",
                          "Give another --results_file; rankwise never overwrites a file it did not write")
    return data, curve


def check_study_results(configs: list[RunConfig], path: str | Path) -> None:
    """ConfigError (before any run) unless `configs` form one LR curve, as the study's results.json holds, and an
    existing `path` holds this same curve (it is then merged into, never overwritten)."""
    curves = _curves(configs)
    if len(curves) != 1:
        names = sorted({f"{describe(c[0])}, seed {c[0].seed}" for c in curves.values()})
        raise ConfigError("results_file", f"holds one learning-rate curve, as the study's results.json does, but "
                          f"this sweep has {len(curves)}: {'; '.join(names)}",
                          "Sweep one method, rank, alpha policy and seed per --results_file (the results_<...>.json "
                          "files beside the runs hold every curve)")
    path = Path(path)
    if path.exists():
        data, curve = _study_file_curve(path)
        if data and curve != next(iter(curves)):
            entry = next(e for e in data.values() if isinstance(e, dict) and isinstance(e.get("meta"), dict))
            meta = entry["meta"]
            what = meta.get("method") if meta.get("rank") is None else \
                f"{meta.get('method')} r={meta.get('rank')} alpha={meta.get('alpha')}"
            raise ConfigError("results_file", f"`{path}` holds another curve ({what}, seed {meta.get('seed')}, "
                              f"{meta.get('epochs')} epochs); it is never overwritten",
                              "Give another --results_file for this curve")


def write_study_results(configs: list[RunConfig], path: str | Path) -> Path | None:
    """Merge the finished points of one LR curve into the study-format results file `path`:
    `{"0.0001": {"best_val_loss", "test_acc", "train_losses", "val_losses", "meta"}, ...}`, keys the learning
    rate's `str()`, sorted by value. Points already there stay (a resumed or extended sweep adds keys); a point's
    entry is refreshed from its run directory. Written atomically, under a lock. Returns `path`, or None when no
    point has finished."""
    check_study_results(configs, path)
    path = Path(path)
    entries = {study_key(cfg.learning_rate): entry for cfg in configs if (entry := run_entry(cfg))}
    if not entries:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        check_study_results(configs, path)  # again, under the lock
        existing = _study_file_curve(path)[0] if path.exists() else {}
        merged = dict(sorted({**existing, **entries}.items(), key=lambda item: float(item[0])))
        if existing != json.loads(json.dumps(merged)):
            write_json_atomic(path, merged)
    return path


# ---------------------------------------------------------------------------------------------
# The `rankwise lr-sweep` command line: its values → the sweep, its plan and its results files
# ---------------------------------------------------------------------------------------------

# RunConfig fields that lr-sweep sets through its own flags (the rest pass through unchanged).
OWN_FIELDS = ("method", "rank", "lora_alpha", "alpha_policy", "seed", "learning_rate", "output_dir", "task",
              "model", "num_train_epochs", "per_device_train_batch_size", "data_dir", "max_train_samples",
              "max_eval_samples", "quiet", "overwrite_output_dir", "save_model")


def _check_ignored(args) -> None:
    """Flags the sweep would not read, as given: refused rather than dropped."""
    if args.seed is not None and args.seeds:
        raise ConfigError("seed", "and --seeds both give the seeds", "Give one of them (--seeds 0 1 for several)")
    if args.full_finetune and args.method != "lora":
        raise ConfigError("method", f"`{args.method}` and --full-finetune both name the method",
                          "Give one of them (--full-finetune is --method full)")
    if args.full_finetune or args.method == FULL_FINETUNING:
        for name, given in (("ranks", args.ranks), ("include_full", args.include_full)):
            if given:
                raise ConfigError(name, "does not apply to a sweep of full fine-tuning",
                                  f"Drop --{name}, or sweep an adapter (--method lora) with --include_full")


def _apply_defaults(args, preset: Preset | None) -> None:
    """Fill the sweep flags left open with the preset's values, else lr-sweep's own defaults (in `args`)."""
    defaults = {"epochs": 3, "batch_size": 32, "alpha": 32.0, **(preset.sweep if preset else {})}
    for name in ("epochs", "batch_size", "alpha"):
        if getattr(args, name) is None:
            setattr(args, name, defaults[name])
    if preset is not None:
        if args.lrs is None:
            args.lrs = list(preset.sweep["lrs"])
        if args.seed is None and not args.seeds:
            args.seed = preset.sweep["seed"]
        if args.rank is None and not args.ranks:
            args.rank = preset.sweep["rank"]


def _overrides(args, preset: Preset | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(RunConfig values of every point, values of adapter points only) from the flags and the preset."""
    overrides = {name: getattr(args, name) for name in FIELDS
                 if name not in OWN_FIELDS and getattr(args, name, None) is not None}
    adapter_overrides = {}
    if preset is not None:  # the preset's regime where the command line leaves it open
        overrides.update({k: v for k, v in preset.overrides.items() if getattr(args, k, None) is None})
        adapter_overrides = {k: v for k, v in preset.adapter_overrides.items() if getattr(args, k, None) is None}
        for name in list(adapter_overrides):
            if name in overrides:
                adapter_overrides.pop(name)
    overrides.update(task=args.task, model=args.model, num_train_epochs=args.epochs,
                     per_device_train_batch_size=args.batch_size, save_model=args.save_model)
    for name in ("data_dir", "max_train_samples", "max_eval_samples"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    return overrides, adapter_overrides


def sweep_from_args(args) -> LRSweep:
    """The LRSweep an `lr-sweep` command line asks for (`args`: its parsed values; the flags left open are
    filled in with the preset's or lr-sweep's defaults)."""
    _check_ignored(args)
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else None
    _apply_defaults(args, preset)
    method = FULL_FINETUNING if args.full_finetune else args.method
    if args.full_lrs and not args.include_full:
        raise ConfigError("full_lrs", "is the grid of the --include_full runs, but --include_full is not given",
                          "Add --include_full, or give the learning rates with --lrs and --full-finetune")
    ranks = args.ranks or [args.rank if args.rank is not None else 16]
    seeds = args.seeds or [args.seed if args.seed is not None else 0]
    overrides, adapter_overrides = _overrides(args, preset)
    model_name = Path(args.model).name or args.model
    output_dir = args.output_dir or str(Path("runs") / f"lr_sweep_{args.task}_{model_name}")
    return LRSweep(method=method, ranks=ranks, alpha=args.alpha, reference_rank=args.rank if args.ranks else None,
                   alpha_policies=list(args.alpha_policy), seeds=list(seeds),
                   lrs=args.lrs, include_full=args.include_full and get_method(method).trains_adapter,
                   full_lrs=args.full_lrs, output_dir=output_dir, overrides=overrides,
                   adapter_overrides=adapter_overrides)


def lr_sweep_points(args) -> tuple[LRSweep, list[RunConfig]]:
    """The sweep a command line asks for and its points, every one validated (and --results_file checked against
    them) before anything runs or is written."""
    sweep = sweep_from_args(args)
    configs = expand_lr_sweep(sweep)
    if args.results_file:
        check_study_results(configs, args.results_file)
    return sweep, configs


def plan_lines(sweep: LRSweep, configs: list[RunConfig]) -> list[str]:
    """`lr-sweep: 14 points in 2 curves → DIR`, then one line per curve with its learning-rate range."""
    curves: dict[str, list[float]] = {}
    for cfg in configs:
        curves.setdefault(f"{describe(cfg)}, seed {cfg.seed}", []).append(cfg.learning_rate)
    lines = [f"lr-sweep: {len(configs)} points in {len(curves)} curve{'s' if len(curves) != 1 else ''} → "
             f"{sweep.output_dir}"]
    lines += [f"  {name}: {len(lrs)} learning rates {format_lr(min(lrs))} … {format_lr(max(lrs))}"
              for name, lrs in curves.items()]
    return lines


def dry_run_lines(configs: list[RunConfig], results_file: str | None) -> list[str]:
    """Each point's state (new / finished / unfinished ...) and the results-file entry it fills."""
    lines = [f"  {state:<10} {name}  → {results_basename(cfg)}.json [{format_lr(cfg.learning_rate)}]"
             for cfg, (name, state) in zip(configs, describe_runs(configs))]
    if results_file:
        lines.append(f"  and {results_file} [{', '.join(study_key(c.learning_rate) for c in configs)}]")
    return lines


def record_results(sweep: LRSweep, configs: list[RunConfig], results_file: str | None) -> list[str]:
    """Write the finished points' results files (and --results_file); lines that say what was written."""
    written = write_results(configs, sweep.output_dir)
    lines = []
    if results_file and write_study_results(configs, results_file):
        lines.append(f"results: {results_file} (the study's results.json format)")
    if written:
        lines.append(f"results: {len(written)} file(s) in {sweep.output_dir} "
                     f"({', '.join(p.name for p in written[:4])}{', …' if len(written) > 4 else ''})")
    return lines
