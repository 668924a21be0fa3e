"""`lora`: LoRA through PEFT (`LoraConfig` with `rank_pattern`/`alpha_pattern`, layer helpers in adapters/lora.py),
so a saved adapter loads with `PeftModel.from_pretrained`. Cost r·(in+out) per matrix; rank masks multiply the
rank components: ΔW = B·diag(q)·A (a forward hook on each `lora_A`).

EVA (`--init eva`) is LoRA's data-driven initialisation: before training, PEFT's `initialize_lora_eva_weights` runs
training batches through the frozen model, takes an incremental SVD of every target's inputs, sets A to the top
right-singular vectors and redistributes the ranks by explained variance (at most eva_rho × r per matrix; the sum
of ranks stays Σ r_i). A matrix can get rank 0: PEFT then removes its adapter.

Saved as `rankwise-lora` (PEFT's files plus rankwise.json); exported as `compact`, `peft` or `merged`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..adapters.io import META_FILE, adapter_metadata, compact_alphas, load_head
from ..adapters.lora import KeepHooks, apply_lora, lora_config, lora_layers, peft_quietly
from ..adapters.masks import hard_keep
from ..allocation import strategy_for
from ..errors import ConfigError, RunDirError
from ..models import named_portably, quiet_transformers
from ..options import option
from ..targets import fan_in_fan_out
from .base import AdapterMethod, AdapterSet, DropoutOption, register

FORMAT = "rankwise-lora"
PEFT_ADAPTER_NAME = "default"


@dataclass
class EvaOptions:
    """EVA's redistribution limit (`--init eva`)."""

    eva_rho: float = option(2.0, "`--init eva`: a matrix may get up to eva_rho × its rank (1 = no redistribution).", "model")


@register
class Lora(AdapterMethod):
    name = "lora"
    title = "LoRA"
    summary = "PEFT LoraConfig with rank_pattern/alpha_pattern; adapters load with PeftModel.from_pretrained"
    default_rank = 8
    default_learning_rate = 5e-4
    lr_range = (1e-4, 1e-2)
    inits = ("default", "eva")
    options = (DropoutOption, EvaOptions)
    saves_peft_files = True
    ranks_beyond_shape = True  # A (r×in) and B (out×r) are free factors at any rank
    export_formats = ("compact", "peft", "merged")
    use_dora = False  # DoRA (methods/dora.py) is LoRA with PEFT's weight decomposition

    def validate(self, cfg) -> None:
        super().validate(cfg)
        if cfg.init == "eva":
            strategy = strategy_for(self, cfg.allocation)
            if strategy.learned or strategy.measures:
                raise ConfigError("init", "`eva` sets the ranks itself and cannot be combined with --allocation "
                                  f"{cfg.allocation}", "Use a static --allocation (e.g. uniform) with --init eva")
            if cfg.eva_rho < 1:
                raise ConfigError("eva_rho", f"must be >= 1, got {cfg.eva_rho:g}", "1 keeps the ranks as given")

    def build(self, model, targets, ranks, alphas, *, rslora=False, dropout=0.0, head_modules=(), task_type=None,
              seed=0, init="default", cfg=None, total_steps=0) -> AdapterSet:
        import torch

        for p in model.parameters():
            p.requires_grad_(False)
        names = [t.name for t in targets]
        torch.manual_seed(seed)  # PEFT initialises lora_A with the global generator
        config = lora_config(names, ranks, alphas, rslora, dropout, list(head_modules), task_type,
                             fan_in_fan_out=fan_in_fan_out(model, names), use_dora=self.use_dora)
        if init == "eva":
            config.init_lora_weights = "eva"
        peft_model = apply_lora(model, config)
        layers = lora_layers(peft_model, names)
        return AdapterSet(self, peft_model, targets, ranks, alphas, layers, KeepHooks(layers))

    def peft_lora_config(self, names: list[str], ranks: list[int], alphas: list[float], *, rslora: bool = False,
                         dropout: float = 0.0, head_modules: list[str] = (), task_type: str | None = None,
                         fan_in_fan_out: bool = False):
        """The `peft.LoraConfig` that `build` applies, for a user's own `get_peft_model` (`Plan.lora_config`):
        exactly `names` at their `ranks` and `alphas` (rank_pattern / alpha_pattern), heads in modules_to_save."""

        return lora_config(list(names), list(ranks), list(alphas), rslora, dropout, list(head_modules), task_type,
                           fan_in_fan_out=fan_in_fan_out, use_dora=self.use_dora)

    def initialise(self, cfg, task, plan, adapter: AdapterSet):
        """EVA on training batches (before the run directory exists); the plan takes EVA's ranks and alphas."""
        if cfg.init != "eva":
            return plan, adapter
        loader = task.shuffled_batches(cfg.per_device_train_batch_size, cfg.seed)
        adapter = apply_eva(adapter, loader, cfg.eva_rho, use_label_mask=cfg.is_instruct, show_progress=not cfg.quiet)
        ranks = eva_ranks(adapter.model, plan.targets)
        alpha_of = dict(zip([t.name for t in adapter.targets], adapter.alphas))
        plan = plan.with_ranks(ranks, [alpha_of.get(r.name, r.alpha) for r in plan.rows])
        if not cfg.quiet:
            print(plan.to_table(), flush=True)
        return plan, adapter

    def allocation_source(self, cfg) -> str | None:
        return "eva" if cfg.init == "eva" else None

    def set_keep(self, adapter: AdapterSet, keep) -> None:
        adapter.hooks.keep = keep  # each layer's hook takes its row (adapters/lora.py)

    def scales(self, adapter: AdapterSet) -> list[float]:
        return [float(m.scaling[PEFT_ADAPTER_NAME]) for m in adapter.modules]

    def adapter_parameters(self, adapter: AdapterSet) -> list:
        return [p for n, p in adapter.model.named_parameters() if "lora_" in n and p.requires_grad]

    def save(self, adapter, directory: Path, *, base_model, head_modules, hard_ranks, tokenizer=None) -> None:
        if len(hard_ranks) != len(adapter.targets):  # EVA removed the matrices it gave rank 0: the rest stay as built
            hard_ranks = list(adapter.ranks)
        # named by hub id, not this machine's path; embeddings are never adapted (PEFT would look the id up)
        with quiet_transformers(), named_portably(adapter.model, base_model):
            adapter.model.save_pretrained(str(directory), save_embedding_layers=False)
        meta = {**adapter_metadata(adapter, base_model, head_modules, hard_ranks), "format": FORMAT}
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    def load(self, model, directory: Path, meta: dict, targets) -> AdapterSet:
        from peft import PeftModel

        try:
            with peft_quietly():
                peft_model = PeftModel.from_pretrained(model, str(directory))
        except (RuntimeError, ValueError) as exc:  # e.g. a head of another size
            raise RunDirError(f"adapter {directory} does not load onto this model: "
                              f"{str(exc).strip().splitlines()[0][:300]}") from None
        layers = lora_layers(peft_model, [t.name for t in targets])
        adapter = AdapterSet(self, peft_model, targets, meta["ranks"], meta["alphas"], layers, KeepHooks(layers))
        if list(meta["hard_ranks"]) != list(adapter.ranks):
            adapter.set_keep(hard_keep(meta["hard_ranks"], max(adapter.ranks)))
        return adapter

    def compact_factors(self, adapter: AdapterSet, index: int, rank: int) -> dict:
        layer = adapter.modules[index]
        return {"lora_A": layer.lora_A[PEFT_ADAPTER_NAME].weight[:rank],
                "lora_B": layer.lora_B[PEFT_ADAPTER_NAME].weight[:, :rank]}

    def attach(self, model, targets, tensors, meta, directory) -> AdapterSet:
        """A PEFT LoRA model at the compact ranks, with α chosen so each matrix keeps its trained scale."""
        import torch

        names = [t.name for t in targets]
        ranks = [int(tensors[f"{n}.lora_A"].shape[0]) for n in names]
        alphas = compact_alphas(meta["scales"], ranks, bool(meta.get("rslora")))
        config = lora_config(names, ranks, alphas, bool(meta.get("rslora")), float(meta.get("lora_dropout") or 0.0),
                             meta["head_modules"], meta.get("peft_task_type"),
                             fan_in_fan_out=fan_in_fan_out(model, names),
                             use_dora=self.use_dora)
        peft_model = apply_lora(model, config)
        layers = lora_layers(peft_model, names)
        with torch.no_grad():
            for name, layer in zip(names, layers):
                for part in self.tensor_parts:  # lora_A, lora_B (and DoRA's lora_magnitude_vector): each has .weight
                    getattr(layer, part)[PEFT_ADAPTER_NAME].weight.copy_(tensors[f"{name}.{part}"])
        load_head(peft_model, tensors, meta["head_modules"], directory)
        return AdapterSet(self, peft_model, targets, ranks, alphas, layers, KeepHooks(layers))

    def merge(self, adapter: AdapterSet):
        if adapter.hooks is not None:
            if adapter.hooks.keep is not None:  # PEFT's merge would ignore the masks
                raise ValueError("merge a LoRA adapter at its hard ranks (no masks): build it with attach_tensors")
            adapter.hooks.remove()
        return adapter.model.merge_and_unload()

    def peft_task_type(self, adapter: AdapterSet) -> str | None:
        task_type = adapter.model.peft_config[PEFT_ADAPTER_NAME].task_type
        return getattr(task_type, "value", task_type)

    def save_peft_export(self, adapter: AdapterSet, directory: Path, meta: dict) -> None:
        """A standard PEFT adapter (as `attach` built it at the hard ranks) plus rankwise.json. PEFT's
        `base_model_name_or_path` and the model card's `base_model` are the portable name (a hub id wherever there is
        one; see models.base_model_reference), not the directory this process happened to load the base from."""

        adapter.hooks.remove()
        # embeddings are never adapted: no look-up of the base model's vocabulary
        with quiet_transformers(), named_portably(adapter.model, meta["base_model"]):
            adapter.model.save_pretrained(str(directory), save_embedding_layers=False)
        (directory / META_FILE).write_text(json.dumps({**meta, "format": FORMAT}, indent=2))


# ---------------------------------------------------------------------------------------------
# EVA
# ---------------------------------------------------------------------------------------------

def apply_eva(adapter: AdapterSet, loader, rho: float, use_label_mask: bool, show_progress: bool = False) -> AdapterSet:
    """Run PEFT's EVA initialisation on a `lora` AdapterSet built with `init_lora_weights="eva"`. Returns the
    AdapterSet at the new ranks and alphas; matrices whose rank became 0 (adapter removed by PEFT) are left out of
    it (see `eva_ranks` for all matrices)."""
    from peft import EvaConfig, initialize_lora_eva_weights

    model = adapter.model
    config = model.peft_config[PEFT_ADAPTER_NAME]
    config.eva_config = EvaConfig(rho=rho, use_label_mask=use_label_mask)
    adapter.hooks.remove()  # EVA replaces lora_A, so the hooks would hang on dead modules

    def forward(model, inputs):
        # Classification labels are one per sequence, not per token: EVA only needs the activations.
        return model(**{k: v for k, v in inputs.items() if use_label_mask or k != "labels"})

    initialize_lora_eva_weights(model, loader, forward_fn=forward, show_progress_bar=show_progress)
    ranks = eva_ranks(model, adapter.targets)
    kept = [i for i, r in enumerate(ranks) if r > 0]
    targets = [adapter.targets[i] for i in kept]
    layers = lora_layers(model, [t.name for t in targets])
    alphas = [float(layer.lora_alpha[PEFT_ADAPTER_NAME]) for layer in layers]
    return AdapterSet(adapter.method, model, targets, [ranks[i] for i in kept], alphas, layers, KeepHooks(layers))


def eva_ranks(model, targets) -> list[int]:
    """Each target's LoRA rank after EVA (0 where PEFT removed the adapter)."""
    from peft.tuners.lora import LoraLayer

    base = model.base_model.model
    ranks = []
    for t in targets:
        module = base.get_submodule(t.name)
        ranks.append(int(module.r[PEFT_ADAPTER_NAME]) if isinstance(module, LoraLayer) else 0)
    return ranks
