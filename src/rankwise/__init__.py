"""rankwise: fine-tune transformers with LoRA-family adapters whose rank differs per weight matrix.

The Python API (api.py; docs/api.md): `rankwise.plan`, `rankwise.wrap`, `rankwise.RankAllocationCallback`,
`rankwise.export`, `rankwise.load`, `rankwise.model_path`. They are imported on first use, so `import rankwise`
(and `rankwise --help`) stays light. Bad input raises `rankwise.ConfigError` (also a ValueError) with the CLI's
message; every refusal is a `rankwise.RankwiseError`.
"""

import importlib

from .errors import ConfigError, DataError, ModelError, RankwiseError, RunDirError
from .version import __version__

_API = ("plan", "wrap", "RankAllocationCallback", "export", "load", "model_path", "Plan")


def __getattr__(name: str):
    if name in _API or name == "api":  # imported on first use: torch, transformers and PEFT load with it
        api = importlib.import_module(f"{__name__}.api")
        return api if name == "api" else getattr(api, name)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")


def load_adapter(model, directory, allow_base_model_mismatch: bool = False):
    """Attach a rankwise adapter directory (run `adapter/` or an export) to a base model; see methods/__init__.py.
    Refused (RunDirError) on another base model than the one it was trained on, unless
    `allow_base_model_mismatch`. Returns the AdapterSet (`.model` is the model to call); `rankwise.load(DIR)`
    returns the model itself."""
    from .api import load_adapter as _load  # arguments checked, refusals name them (ConfigError)

    return _load(model, directory, allow_base_model_mismatch=allow_base_model_mismatch)


__all__ = ["__version__", "plan", "wrap", "RankAllocationCallback", "export", "load", "model_path", "Plan",
           "load_adapter", "ConfigError", "DataError", "ModelError", "RankwiseError", "RunDirError"]
