"""De-quantise a GGUF checkpoint once and keep it as an ordinary Hugging Face directory.

transformers reads GGUF files (`from_pretrained(dir, gguf_file=...)`, package `gguf`) but
de-quantises every tensor on every load (≈15–35 s for SmolLM2-135M on 2 CPU cores). The first call
of `dequantised_dir` does that once and saves the float32 model as safetensors plus the tokenizer in
`<cache>/<name>/` (`<cache>` is `$RANKWISE_CACHE`, else `~/.cache/rankwise`); later loads read the
safetensors in about a second.

The directory is built under a temporary name and renamed into place, with `source.json` (the GGUF's
path, size and modification time) written last, so a killed build never looks finished and a
changed GGUF (a new package version) is converted again. Two processes racing to build it both
succeed: the first rename wins, the other discards its copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import ModelError

SOURCE_FILE = "source.json"
GGUF_INSTALL = "pip install gguf"


def cache_root() -> Path:
    """Where de-quantised models live: `$RANKWISE_CACHE`, else `~/.cache/rankwise`."""
    return Path(os.environ.get("RANKWISE_CACHE") or Path.home() / ".cache" / "rankwise").expanduser()


def _source_record(gguf_path: Path) -> dict:
    stat = gguf_path.stat()
    return {"gguf_file": str(gguf_path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _is_current(directory: Path, source: dict) -> bool:
    try:
        recorded = json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("size") == source["size"] and recorded.get("mtime_ns") == source["mtime_ns"] \
        and (directory / "config.json").is_file()


def _convert(gguf_path: Path, target: Path) -> None:
    """Load `gguf_path` through transformers (de-quantising to float32) and save model + tokenizer in `target`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32, **kwargs)
    # The weights are plain float32 now; drop the GGUF quantiser so the model saves (and reloads) as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf_path.stem
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def _make_shareable(directory: Path) -> None:
    """mkdtemp and safetensors create owner-only files; the cache is meant to be shared like any model folder."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for path in directory.iterdir():
        os.chmod(path, 0o666 & ~umask)


def dequantised_dir(gguf_path: str | Path, name: str | None = None) -> Path:
    """A directory `from_pretrained` loads fast, holding `gguf_path` de-quantised to float32 safetensors
    and its tokenizer; built on the first call, reused afterwards.

    `name` is the cache sub-directory (default: the GGUF file's stem). Raises ModelError when the GGUF
    file is missing, the `gguf` package is not installed, or the cache directory cannot be written.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file {gguf_path} does not exist")
    source = _source_record(gguf_path)
    target = cache_root() / (name or gguf_path.stem)
    if _is_current(target, source):
        return target

    if importlib.util.find_spec("gguf") is None:
        raise ModelError(f"reading {gguf_path.name} needs the package `gguf`, which is not installed. "
                         f"Install it with: {GGUF_INSTALL}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building."))
    except OSError as exc:
        raise ModelError(f"cannot write the model cache {target.parent} ({exc.strerror}). Set RANKWISE_CACHE to a "
                         "writable directory") from None
    print(f"rankwise: de-quantising {gguf_path.name} once (about half a minute); cached in {target}",
          file=sys.stderr)
    try:
        _convert(gguf_path, building)
        _make_shareable(building)
        (building / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")  # last: marks the copy complete
        if target.exists():  # stale (another GGUF) or a half-written copy from an older version: set it aside
            stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale."))
            try:
                os.replace(target, stale / "old")
            except OSError:
                pass  # another process moved it first
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(building, target)
        except OSError:
            if not _is_current(target, source):  # lost a race to a complete copy: fine; else a real failure
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target
