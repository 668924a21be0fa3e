"""rankwise: fine-tune transformers with LoRA-family adapters whose rank differs per weight matrix."""

__version__ = "0.1.0"


def load_adapter(model, directory):
    """Attach a rankwise adapter directory (run `adapter/` or an export) to a base model; see adapters/io.py."""
    from .adapters.io import load_adapter as _load

    return _load(model, directory)


__all__ = ["__version__", "load_adapter"]
