"""rankwise: fine-tune transformers with LoRA-family adapters whose rank differs per weight matrix.

The Python API (api.py; docs/api.md): `rankwise.plan`, `rankwise.wrap`, `rankwise.RankAllocationCallback`,
`rankwise.export`, `rankwise.load`, `rankwise.model_path`. They are imported on first use, so `import rankwise`
(and `rankwise --help`) stays light. Bad input raises `rankwise.ConfigError` (also a ValueError) with the CLI's
message; every refusal is a `rankwise.RankwiseError`.
"""

import sys
import types

from .errors import ConfigError, DataError, ModelError, RankwiseError, RunDirError
from .version import __version__

_API = ("plan", "wrap", "RankAllocationCallback", "export", "load", "model_path", "Plan")


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rankwise' has no attribute {name!r}")


class _Package(types.ModuleType):
    """`rankwise.plan` is the API function, while the module plan.py is `rankwise.plan` in sys.modules (imported
    with `from rankwise.plan import ...`): importing that module must not replace the function on the package."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def load_adapter(model, directory, allow_base_model_mismatch: bool = False):
    """Attach a rankwise adapter directory (run `adapter/` or an export) to a base model; see methods/__init__.py.
    Refused (RunDirError) on another base model than the one it was trained on, unless
    `allow_base_model_mismatch`. Returns the AdapterSet (`.model` is the model to call); `rankwise.load(DIR)`
    returns the model itself."""
    from .methods import load_adapter as _load

    return _load(model, directory, allow_base_model_mismatch=allow_base_model_mismatch)


__all__ = ["__version__", "plan", "wrap", "RankAllocationCallback", "export", "load", "model_path", "Plan",
           "load_adapter", "ConfigError", "DataError", "ModelError", "RankwiseError", "RunDirError"]
