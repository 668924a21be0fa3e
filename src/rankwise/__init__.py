"""rankwise: fine-tune transformers with LoRA-family adapters whose rank differs per weight matrix."""

from .version import __version__


def load_adapter(model, directory, allow_base_model_mismatch: bool = False):
    """Attach a rankwise adapter directory (run `adapter/` or an export) to a base model; see methods/__init__.py.
    Refused (RunDirError) on another base model than the one it was trained on, unless
    `allow_base_model_mismatch`."""
    from .methods import load_adapter as _load

    return _load(model, directory, allow_base_model_mismatch=allow_base_model_mismatch)


__all__ = ["__version__", "load_adapter"]
