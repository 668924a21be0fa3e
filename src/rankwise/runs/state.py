"""Run state in one place: what a directory holds, whether a run may be written there, and the one-writer lock.

A directory is a rankwise run when its config.json was written by rankwise (`{"config": {...},
"environment": {"rankwise": ...}}`) and every entry in it is one that rankwise writes (RUN_ENTRIES).
rankwise reuses an output directory only when it is empty or holds an unfinished (killed or failed) run of
the same config; it replaces a finished run only with `--overwrite_output_dir`, and then atomically: the
new run is trained in a hidden sibling and swapped in when it ends, so a kill at any moment leaves the old
run or the new one, complete. A directory holding anything rankwise did not write is never touched.

The lock is `<parent>/.locks/<name>.lock` of the directory's real path (symlinks, `..` and relative paths
resolved, so every spelling of one directory takes one lock; flock, released by the kernel when the process dies),
the same for `train`, `glue` and `sweep`; it records its holder (pid, host, command) so a refused writer can say
who.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..config import RunConfig, applies
from ..errors import RunDirError
from .naming import NOT_IDENTITY, with_old_defaults
from .rundir import SUMMARY, RunDir, check_writable_path, read_json, replace_dir, sibling

# Every entry rankwise writes in a run directory (DESIGN.md → Outputs; generations.jsonl for instruction
# tasks, logs/ and wandb/ for --report_to, checkpoint-N/ while training), plus its hidden temporary files
# (`.<name>.<random>.tmp`, `.adapter.tmp`).
RUN_ENTRIES = frozenset({"config.json", "ranks.json", "metrics.jsonl", "allocation.jsonl", SUMMARY, "adapter",
                         "model", "generations.jsonl", "wandb", "logs"})
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
FINISHED = ("completed", "diverged")

try:
    import fcntl
except ImportError:  # no flock (Windows): runs go without the cross-process guard
    fcntl = None


def _is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or bool(CHECKPOINT.fullmatch(name)) or (name.startswith(".") and name.endswith(".tmp"))


def checkpoints(run_dir: Path, complete: bool = True) -> list[Path]:
    """The run's checkpoint-N/ directories, oldest (smallest N) first. `complete`: only those whose writing
    finished (Trainer writes trainer_state.json last); a run killed while writing one leaves it incomplete."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found) if not complete or (p / "trainer_state.json").is_file()]


def _rankwise_config(path: Path) -> dict | None:
    """The `config` mapping of a config.json that rankwise wrote (`environment.rankwise` set, or a run config with
    `task` and `method`), else None."""
    try:
        data = read_json(path / "config.json")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return None
    environment = data.get("environment")
    written_by_rankwise = isinstance(environment, dict) and "rankwise" in environment
    if written_by_rankwise or {"task", "method"} <= set(data["config"]):
        return data["config"]
    return None


@dataclass
class DirState:
    """What `path` holds. kind: `new` (missing or empty), `unfinished` (a run killed before its summary),
    `failed`, `finished` (completed or diverged), `corrupt` (a run whose summary.json does not parse), or
    `foreign` (anything else: user files, a folder of runs, a file)."""

    path: Path
    kind: str
    config: dict | None = None
    summary: dict | None = None
    foreign: list[str] = field(default_factory=list)
    runs_inside: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """What is there, in words, for a message."""
        if self.kind == "foreign":
            if not self.path.is_dir():
                return "is a file, not a directory"
            if self.runs_inside:
                shown = ", ".join(self.runs_inside[:3]) + (", ..." if len(self.runs_inside) > 3 else "")
                return f"is a folder of {len(self.runs_inside)} rankwise run(s) ({shown})"
            shown = ", ".join(self.foreign[:5]) + (", ..." if len(self.foreign) > 5 else "")
            return f"holds {len(self.foreign)} file(s) rankwise did not write ({shown})"
        if self.kind == "finished":
            status = self.summary.get("status")
            metric = self.summary.get("main_metric")
            best = (self.summary.get("best") or {}).get(metric) if metric else None
            return f"holds a finished run (status {status}" + (f", best {metric} {best:.4f}" if best is not None
                                                                 else "") + ")"
        if self.kind == "failed":
            return "holds a failed run"
        if self.kind == "corrupt":
            return f"holds a run whose {SUMMARY} cannot be read"
        if self.kind == "unfinished":
            return "holds an unfinished run (killed before it ended)"
        return "is empty"


def inspect(path: str | Path) -> DirState:
    path = Path(path)
    if not path.exists():
        return DirState(path, "new")
    if not path.is_dir():
        return DirState(path, "foreign")
    entries = sorted(p.name for p in path.iterdir())
    if not entries:
        return DirState(path, "new")
    config = _rankwise_config(path)
    foreign = [name for name in entries if not _is_run_entry(name)]
    if config is None or foreign:
        runs = [name for name in entries if (path / name).is_dir() and _rankwise_config(path / name) is not None]
        return DirState(path, "foreign", config, foreign=foreign or entries, runs_inside=runs)
    if not (path / SUMMARY).exists():
        return DirState(path, "unfinished", config)
    try:
        summary = read_json(path / SUMMARY)
    except (OSError, ValueError):
        summary = None
    if not isinstance(summary, dict) or summary.get("status") not in (*FINISHED, "failed"):
        return DirState(path, "corrupt", config)
    return DirState(path, "finished" if summary["status"] in FINISHED else "failed", config, summary)


def config_conflicts(cfg: RunConfig, run_dir: str | Path | None = None) -> list[str]:
    """`field: X there, Y here` for each setting that changes results (and applies to this allocation and
    method) where the run in `run_dir` (default: cfg.output_dir) was trained with another value than `cfg`
    asks for. A field its config.json lacks (written by an older rankwise) is compared as the value it had then
    when its default changed since (naming.NAME_DEFAULTS), and not compared otherwise."""
    stored = _rankwise_config(Path(run_dir or cfg.output_dir))
    return [] if stored is None else stored_config_conflicts(stored, cfg)


def stored_config_conflicts(stored: dict, cfg: RunConfig) -> list[str]:
    """`config_conflicts` against a stored config mapping (a run's config.json, a checkpoint's state)."""
    wanted = json.loads(json.dumps(cfg.to_dict(), default=str))  # tuples become lists, as in the file
    stored = with_old_defaults(stored)
    return [f"{name}: {stored[name]!r} there, {value!r} here" for name, value in wanted.items()
            if name not in NOT_IDENTITY and name in stored and stored[name] != value
            and applies(name, cfg.allocation, cfg.method)]


def finished_summary(cfg: RunConfig) -> dict | None:
    """The summary of the run in `cfg.output_dir` when it is finished (completed or diverged) with this config;
    None when it is not finished, or was trained with another config (see `config_conflicts`)."""
    state = inspect(cfg.output_dir)
    if state.kind != "finished" or config_conflicts(cfg):
        return None
    return state.summary


def run_state(run_dir: str | Path) -> str:
    """`finished` (completed or diverged), `failed`, `running` (a process holds its lock), `unfinished`
    (started, no summary: killed), `corrupt`, `foreign` (not a rankwise run), or `new`."""
    state = inspect(run_dir).kind
    if state in ("unfinished", "new") and is_locked(run_dir):
        return "running"
    return state


# ---------------------------------------------------------------------------------------------
# May a run be written here?
# ---------------------------------------------------------------------------------------------

def check_output_dir(cfg: RunConfig) -> DirState:
    """Raise RunDirError (before anything is loaded or written) unless `cfg.output_dir` may receive this run:
    it is new or empty, holds an unfinished or failed run of the same config, or holds a rankwise run and
    `--overwrite_output_dir` is given. A directory holding anything else is refused, whatever the flags."""
    if cfg.output_dir is None or not str(cfg.output_dir).strip():
        raise RunDirError("--output_dir: is empty. Give the directory the run should be written to "
                          "(e.g. runs/my_run), or leave the option out for a default under runs/")
    path = check_writable_path(cfg.output_dir, "--output_dir")
    state = inspect(path)
    where = f"--output_dir `{path}`"
    if state.kind == "new":
        return state
    if state.kind == "foreign":
        raise RunDirError(f"{where} {state.describe()}; rankwise writes a run only into an empty directory or "
                          "one of its own runs, and never deletes files it did not write. Give a new or empty "
                          "--output_dir (e.g. a subdirectory)")
    if cfg.overwrite_output_dir:
        return state
    if state.kind in ("finished", "corrupt"):
        raise RunDirError(f"{where} already {state.describe()}. Choose another --output_dir, or pass "
                          "--overwrite_output_dir to replace it (the old run stays until the new one ends)")
    conflicts = config_conflicts(cfg, path)
    if conflicts:
        raise RunDirError(f"{where} {state.describe()} of another config ({'; '.join(conflicts)}). Choose "
                          "another --output_dir, or pass --overwrite_output_dir to replace it")
    return state


# ---------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------

_held: dict[Path, int] = {}  # lock files this process holds -> depth (a sweep holds it around `train`)


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of a run directory, named after its real path: a symlink to the directory or to a parent,
    `..` in the path and another working directory all give the same lock."""
    run_dir = Path(os.path.realpath(run_dir))
    return run_dir.parent / ".locks" / f"{run_dir.name}.lock"


def lock_holder(run_dir: str | Path) -> str:
    """Who holds (or last held) the lock, in words."""
    try:
        info = json.loads(lock_path(run_dir).read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not info:
        return "another process"
    return (f"process {info.get('pid')} on {info.get('host')} (since {info.get('since')}: "
            f"{info.get('command', '')[:120]})")


def is_locked(run_dir: str | Path) -> bool:
    path = lock_path(run_dir)
    if fcntl is None or not path.exists():
        return False
    if path in _held:
        return True
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


@contextmanager
def run_lock(run_dir: str | Path, tries: int = 5) -> Iterator[bool]:
    """Exclusive lock for one run directory, re-entrant within a process. Yields False when another process
    holds it (after `tries` attempts 0.2 s apart: a dry run may be probing it for an instant)."""
    if fcntl is None:
        yield True
        return
    path = lock_path(run_dir)
    if path in _held:
        _held[path] += 1
        try:
            yield True
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        for attempt in range(tries):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt == tries - 1:
                    yield False
                    return
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}))
        handle.flush()
        _held[path] = 1
        try:
            yield True
        finally:
            del _held[path]
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# Claiming a directory for a run
# ---------------------------------------------------------------------------------------------

def _recover(final: Path) -> None:
    """Under the lock: finish what a killed overwrite left (rankwise's own hidden siblings only)."""
    old = sibling(final, "overwrite-old")
    if old.is_dir():
        if final.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, final)  # killed between the two renames: the old run goes back
    shutil.rmtree(sibling(final, "overwrite-new"), ignore_errors=True)


class Claim:
    """The directory a run writes into while it trains, and how it becomes the output directory at the end."""

    def __init__(self, final: Path, write_to: Path):
        self.final, self.write_to = final, write_to
        self.run = RunDir(write_to)

    @property
    def replacing(self) -> bool:
        return self.write_to != self.final

    def commit(self) -> None:
        if self.replacing:
            replace_dir(self.write_to, self.final)
            self.run = RunDir(self.final)

    def abandon(self) -> None:
        """A replacing run that failed: drop it, the old run stays as it was."""
        if self.replacing:
            shutil.rmtree(self.write_to, ignore_errors=True)


@contextmanager
def claim_output_dir(cfg: RunConfig, resume_from: Path | None = None) -> Iterator[Claim]:
    """Lock `cfg.output_dir`, check it again under the lock, and yield where to write. An unfinished or failed
    run of the same config is cleared (only the entries rankwise writes), unless it is resumed from one of its
    checkpoints (`resume_from`), which keeps it; with --overwrite_output_dir a rankwise run is replaced at the
    end (`Claim.commit`)."""
    final = Path(os.path.realpath(cfg.output_dir))  # through a symlink, the real directory is written (and replaced)
    with run_lock(final, tries=1) as locked:
        if not locked:
            raise RunDirError(f"--output_dir `{cfg.output_dir}` is being written by {lock_holder(final)}. Wait for "
                              "it to end, or choose another --output_dir")
        _recover(final)
        state = check_output_dir(cfg)
        resuming_here = resume_from is not None and state.kind in ("unfinished", "failed") \
            and Path(os.path.realpath(resume_from)).parent == final
        if state.kind != "new" and not resuming_here and (cfg.overwrite_output_dir
                                                          or state.kind not in ("unfinished", "failed")):
            write_to = sibling(final, "overwrite-new")
        else:
            write_to = final
            kept = set(checkpoints(final)) | {final / n for n in ("metrics.jsonl", "allocation.jsonl", "logs",
                                                                   "wandb")} if resuming_here else set()
            for child in (final.iterdir() if final.is_dir() else []):
                keep = child in kept  # resuming: complete checkpoints and the records (not an incomplete checkpoint)
                if not keep:  # inspect() proved each is ours
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        write_to.mkdir(parents=True, exist_ok=True)
        yield Claim(final, write_to)
