"""The model options of a run: which model, which adapter method on which matrices, how alpha scales, and which
allocation strategy gives the ranks (each method's and strategy's own options live in its module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..allocation import selectable
from ..methods import METHODS
from ..options import option

INITS = ("default", "eva")
ALPHA_POLICIES = ("constant", "ratio", "rslora")
ALLOCATIONS = selectable()


@dataclass
class ModelArguments:
    """The model, its adapters and the allocation strategy."""

    model: Optional[str] = option(None, "Model: `minilm`, `smollm2-135m`, a Hugging Face hub id or a local directory. "
                                 "Default: minilm for GLUE, smollm2-135m for alpaca.", "model",
                                 aliases=("--model_name_or_path",))
    method: str = option("loraxs", "Adapter method.", "model", METHODS)
    target_modules: Optional[str] = option(None, "Comma-separated module-name suffixes, `all-linear` (every linear layer "
                                          "of the transformer blocks) or `every-linear` (the head's too, whose own "
                                          "weights then stay frozen). Default per architecture (BERT/RoBERTa: "
                                          "query,value,attention.output.dense,output.dense).",
                                          "model")
    lora_alpha: float = option(16.0, "Adapter alpha: the update is scaled by alpha/r (LoRA and LoRA-XS).", "model",
                              aliases=("--alpha",))
    alpha_policy: str = option("constant", "How alpha follows each matrix's rank: `constant` alpha (scale alpha/r), "
                              "`ratio` (alpha_i = lora_alpha * r_i / rank, so alpha/r is the same everywhere), "
                              "`rslora` (scale alpha/sqrt(r)).", "model", ALPHA_POLICIES)
    init: str = option("default", "LoRA initialisation: `default` (PEFT's: A random, B zero) or `eva` (PEFT EVA: A from "
                      "the SVD of each matrix's input activations on training batches, ranks redistributed by explained "
                      "variance before training; the rank sum stays the same).", "model", INITS)
    allocation: str = option("uniform", "How each matrix gets its rank.", "allocation", ALLOCATIONS)
