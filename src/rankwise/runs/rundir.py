"""The run directory: the contract every report and export reads (see DESIGN.md → Outputs).

    config.json        fully resolved config, library versions, git revision
    ranks.json         every target matrix: name, layer, kind, shape, rank (hard ranks for learned runs)
    metrics.jsonl      one object per logging step ({"type": "train", ...}) and evaluation ({"type": "eval", ...})
    allocation.jsonl   learned runs: per logging step α, budget, continuous and hard ranks by module name
    adapter/           adapter weights (safetensors): PEFT format for lora, rankwise format for loraxs
    model/             full fine-tuning: the whole model (save_pretrained)
    summary.json       written last: status completed|diverged|failed, best/final metrics, parameters, time

Single files are written atomically (temp file + rename) and summary.json only when the run ends,
so a killed run never leaves a directory that reads as complete.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import RunDirError

SUMMARY = "summary.json"
STATUSES = ("completed", "diverged", "failed")


def finite_or_none(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null, so NaN never reads as a result."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def _shareable_mode() -> int:
    """0666 minus the process umask: what a plain `open(path, "w")` would give."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: readers see the old file or the new one,
    never a torn one. The file gets the permissions a plain `open(path, "w")` would (results are for sharing)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, _shareable_mode())  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(finite_or_none(r), ensure_ascii=False, allow_nan=False) + "\n"
                                    for r in records))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | Path) -> list[dict]:
    """The records (JSON objects) of a JSONL file. A line that is not one (the torn last line of a killed writer,
    bytes that are not UTF-8, another program's line) is left out; reports refuse such a file with a warning first
    (report.aggregate)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def read_summary(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / SUMMARY
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError):
        return None


def check_writable_path(path: str | Path, option: str) -> Path:
    """Raise RunDirError unless `path` (a file or directory to be created) can be written: its nearest existing
    ancestor is a writable directory. Creates nothing."""
    path = Path(path)
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if ancestor != path and not ancestor.is_dir():
        raise RunDirError(f"{option}: `{path}` cannot be created: `{ancestor}` is a file, not a directory. "
                          f"Choose a path in a directory")
    writable_dir = ancestor if ancestor.is_dir() else ancestor.parent
    if not os.access(writable_dir, os.W_OK | os.X_OK):
        raise RunDirError(f"{option}: `{path}` cannot be written: no write permission in `{writable_dir}`. "
                          f"Choose a directory you can write to")
    return path


def sibling(path: Path, role: str) -> Path:
    """A hidden sibling of `path` that rankwise owns: `.<name>.<role>`."""
    return path.with_name(f".{path.name}.{role}")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_dir(new: Path, final: Path) -> None:
    """Put the directory `new` at `final`, replacing what is there, such that a kill at any moment leaves one
    complete directory at `final` (or, on systems without an atomic exchange, one recoverable sibling)."""
    if not final.exists():
        os.replace(new, final)
        return
    if _exchange(new, final):
        shutil.rmtree(new)  # now the old run
        return
    old = sibling(final, "overwrite-old")
    os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old)


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: Any) -> None:
        write_json_atomic(self.path / name, data)

    def append_jsonl(self, name: str, record: dict) -> None:
        with open(self.path / name, "a") as f:
            f.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
            f.flush()

    def atomic_subdir(self, name: str) -> "_AtomicDir":
        """`with run.atomic_subdir("adapter") as tmp:` write into tmp; it becomes run/adapter on success."""
        return _AtomicDir(self.path / name)

    def write_summary(self, summary: dict) -> None:
        assert summary.get("status") in STATUSES, summary.get("status")
        self.write_json(SUMMARY, summary)


class _AtomicDir:
    def __init__(self, final: Path):
        self.final = final
        self.tmp = final.with_name(f".{final.name}.tmp")

    def __enter__(self) -> Path:
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        mode = _shareable_mode()  # some writers (safetensors) create 0600 files; results are for sharing
        for path in self.tmp.rglob("*"):
            if path.is_file():
                os.chmod(path, mode)
        replace_dir(self.tmp, self.final)
