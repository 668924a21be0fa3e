"""Hostile inputs to `rankwise train | plan | glue | predict` (issue 17): each stops before any work with one
message that names the option, what is wrong and the fix; exit status 2; the output directory is not created.

Case classes: options an allocation/method/task ignores, config-file values of the wrong type, bad STS-B scores
and labels, data files without examples, --max_seq_length beyond the model's positions, files that are not
UTF-8, seeds outside torch's range, budgets and ranks blamed on the wrong option, directories given for files,
config files with another suffix, and the --seed help text.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import run_cli
from rankwise.config import RunConfig, config_from_args, prepare
from rankwise.sweep import expand, parse_sweep


def refused(capsys, tmp_path, command, *args, out_flag="--output_dir"):
    """Run a command that must refuse its input: exit 2, exactly one error line, nothing written."""
    out = tmp_path / "out"
    extra = [out_flag, out] if out_flag else []
    code = run_cli(command, *extra, *args)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.err.count("error:") == 1, captured.err
    assert "Traceback" not in captured.err
    assert not out.exists(), "nothing may be written for bad input"
    return captured.err


def tiny_train(model_dir, data_dir, *args):
    return ["--model", model_dir, "--data_dir", data_dir, "--num_train_epochs", "1", "--max_train_samples", "8",
            "--quiet", *args]


@pytest.fixture
def glue_copy(tiny_glue_dir, tmp_path):
    """A writable copy of the tiny GLUE folders, to damage one file per test."""
    root = tmp_path / "glue"
    shutil.copytree(tiny_glue_dir, root)
    return root


# ---------------------------------------------------------------------------------------------
# Options a run would ignore: refused for one run, still dropped per run by sweeps
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected,fix", [
    (["--allocation", "learned", "--budget", "5000"], "--budget: is not used by --allocation learned",
     "--rank_average (an average rank) or --memory_start"),
    (["--allocation", "learned", "--match_budget"], "--match_budget: is not used by --allocation learned",
     "--rank_average"),
    (["--rank_file", "{ranks}"], "--rank_file: only applies to --allocation custom, but --allocation is `uniform`",
     "use --allocation custom"),
    (["--allocation", "linear_decay", "--rank_first", "8", "--rank_last", "2", "--rank_attention", "4"],
     "--rank_attention: only applies to --allocation attention_heavy", "Drop --rank_attention"),
    (["--rank_min", "4"], "--rank_min: only applies to --allocation learned, gradient or fim, but --allocation is `uniform`",
     "use --allocation learned"),
    (["--allocation", "learned", "--rank", "8"], "--rank: does not apply to --allocation learned",
     "use --rank_min/--rank_max and --rank_average"),
    (["--method", "full", "--rank", "8"], "--rank: does not apply to --method full", "Drop --rank"),
    (["--method", "lora", "--adalora_init_r", "12"], "--adalora_init_r: only applies to --method adalora",
     "use --method adalora"),
    (["--method", "adalora", "--rank_min", "2"], "--rank_min: does not apply to --method adalora",
     "--adalora_target_r"),
    (["--method", "loraxs", "--lora_dropout", "0.1"], "--lora_dropout: applies to LoRA layers", "Drop --lora_dropout"),
    (["--allocation", "learned", "--memory_end", "5000"], "--memory_end: is part of the budget schedule",
     "Give --memory_start"),
    (["--allocation", "learned", "--rank_average", "6", "--epochs_memory_start", "1", "--num_train_epochs", "3"],
     "--epochs_memory_start: is part of the budget schedule", "drop --epochs_memory_start"),
    (["--task", "cola", "--train_file", "{alpaca}"], "--train_file: is not read by GLUE task `cola`",
     "To train on your own files, drop --task (or use --task text)"),
    (["--task", "sst2", "--eval_size", "50"], "--eval_size: only applies to --task alpaca", "Drop --eval_size"),
    (["--num_generations", "2"], "--num_generations: only applies to --task alpaca", "Drop --num_generations"),
])
@pytest.mark.parametrize("command", ["train", "plan"])
def test_an_option_the_run_would_ignore_is_refused(command, args, expected, fix, capsys, tmp_path, tiny_bert_dir,
                                                   tiny_glue_dir, tiny_alpaca_file):
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"layer_ranks": [2, 2, 2]}))
    args = [str(a).replace("{ranks}", str(ranks)).replace("{alpaca}", str(tiny_alpaca_file)) for a in args]
    err = refused(capsys, tmp_path, command, *tiny_train(tiny_bert_dir, tiny_glue_dir, *args),
                  out_flag="--output_dir" if command == "train" else None)
    assert expected in err and fix in err


def test_options_from_a_config_file_and_the_glue_command_are_checked_too(capsys, tmp_path, tiny_glue_dir):
    config = tmp_path / "run.yaml"
    config.write_text("allocation: uniform\nrank_file: ranks.json\n")
    err = refused(capsys, tmp_path, "train", "--config", config)
    assert "--rank_file: only applies to --allocation custom" in err
    err = refused(capsys, tmp_path, "glue", "--target_task", "cola", "--model", "minilm", "--data_dir", tiny_glue_dir,
                  "--rank_average", "20", "--memory_end", "9000", "--dry_run")
    assert "--memory_end: is part of the budget schedule" in err


def test_a_value_equal_to_the_default_and_a_resolved_config_pass():
    # Same experiment as leaving it out: not refused. A resolved config (every default filled in) passes again.
    for cfg in (RunConfig(allocation="learned", rank=25), RunConfig(allocation="uniform", epochs_rank_discrete=0),
                RunConfig(allocation="learned", memory_start=9000.0, epochs_memory_start_to_end=0)):
        assert prepare(prepare(cfg)) == prepare(cfg)
    assert prepare(RunConfig(task="alpaca", train_file=None, eval_size=10)).eval_size == 10


def test_sweeps_still_drop_inapplicable_base_and_grid_options_per_run(tmp_path):
    ranks = tmp_path / "ranks.json"
    ranks.write_text(json.dumps({"layer_ranks": [2] * 6}))
    spec = parse_sweep({"base": {"rank": 8, "rank_min": 4, "rank_max": 8, "rank_average": 6, "budget": 9000,
                                 "match_budget": True, "rank_file": str(ranks), "lora_dropout": 0.1},
                        "grid": {"allocation": ["uniform", "learned", "custom"], "method": ["loraxs", "lora"]}})
    configs = expand(spec, output_dir=str(tmp_path / "runs"), check_resources=False)
    assert len(configs) == 6
    by = {(c.allocation, c.method): c for c in configs}
    assert by["learned", "loraxs"].budget is None and not by["learned", "loraxs"].match_budget
    assert by["learned", "lora"].rank_average == 6 and by["learned", "lora"].lora_dropout == 0.1
    assert by["uniform", "loraxs"].rank_min is None and by["uniform", "loraxs"].lora_dropout == 0.0
    assert by["uniform", "lora"].budget == 9000 and by["custom", "lora"].rank_file == str(ranks)
    assert by["uniform", "lora"].rank_file is None
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------
# Config files: exact types only
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected,fix", [
    ("rank: true\n", "--rank: bad value in `{path}`: got true (a bool), but it takes an integer",
     "Write an integer: true/false is not one"),
    ("label: [a, b]\n", '--label: bad value in `{path}`: got ["a", "b"] (a list), but it takes a string',
     "Write a string"),
    ("rank: 2.5\n", "--rank: bad value in `{path}`: got 2.5 (a float), but it takes an integer",
     "Write a whole number such as 2"),
    ("task: {name: cola}\n", '--task: bad value in `{path}`: got {"name": "cola"} (a dict), but it takes a string',
     "Write a string"),
    ("label: 2024\n", "--label: bad value in `{path}`: got 2024 (an int), but it takes a string",
     'Quote it to mean the text: label: "2024"'),
    ("learning_rate: fast\n", '--learning_rate: bad value in `{path}`: got "fast" (a str), but it takes a number',
     "Write a number"),
    ("quiet: 1\n", "--quiet: bad value in `{path}`: got 1 (an int), but it takes true or false", "Write true or false"),
    ("rank: '8'\n", '--rank: bad value in `{path}`: got "8" (a str), but it takes an integer', "Write an integer"),
    ("num_train_epochs: null\n", "--num_train_epochs: bad value in `{path}`: got null, but it takes a number",
     "leave --num_train_epochs out"),
    ("target_modules: [query, value]\n", "--target_modules: bad value in `{path}`: got", "one comma-separated string"),
])
def test_config_file_values_must_have_the_options_type(text, expected, fix, capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    err = refused(capsys, tmp_path, "train", "--config", config)
    assert expected.replace("{path}", str(config)) in err and fix in err


def test_config_file_numbers_and_command_line_text_still_convert(tmp_path):
    from rankwise.cli import build_parser

    config = tmp_path / "run.yaml"
    config.write_text("learning_rate: 1e-3\nlora_alpha: 16\nrank: 8\nlabel: my run\n")  # YAML reads 1e-3 as text
    cfg = config_from_args(build_parser().parse_args(["train", "--config", str(config)]))
    assert (cfg.learning_rate, cfg.lora_alpha, cfg.rank, cfg.label) == (1e-3, 16.0, 8, "my run")
    assert isinstance(cfg.lora_alpha, float)
    # Command-line integers are exact, also beyond 2^53 (no float round trip) and in scientific notation.
    args = build_parser().parse_args(["train", "--seed", "18446744073709551615", "--rank", "1e1"])
    cfg = config_from_args(args)
    assert (cfg.seed, cfg.rank) == (18446744073709551615, 10)


# ---------------------------------------------------------------------------------------------
# Data: scores, labels, files without examples
# ---------------------------------------------------------------------------------------------

def _replace_label(path, line_number, value, column=-1):
    lines = path.read_text().split("\n")
    cells = lines[line_number - 1].split("\t")
    cells[column] = value
    lines[line_number - 1] = "\t".join(cells)
    path.write_text("\n".join(lines))


@pytest.mark.parametrize("task,folder,split,value,expected", [
    ("stsb", "STS-B", "train", "nan", "score `nan` is not a number in [0, 5]"),
    ("stsb", "STS-B", "train", "inf", "score `inf` is not a number in [0, 5]"),
    ("stsb", "STS-B", "dev", "-0.5", "score `-0.5` is not a number in [0, 5]"),
    ("stsb", "STS-B", "dev", "5.01", "score `5.01` is not a number in [0, 5]"),
    ("stsb", "STS-B", "train", "high", "score `high` is not a number"),
    ("sst2", "SST-2", "train", "2", "label `2` is not one of ['0', '1']"),
    ("sst2", "SST-2", "dev", "1.0", "label `1.0` is not one of ['0', '1']"),
    ("cola", "CoLA", "train", "yes", "label `yes` is not one of ['0', '1']"),
])
def test_bad_scores_and_labels_name_the_file_line_and_value(task, folder, split, value, expected, capsys, tmp_path,
                                                           glue_copy, tiny_bert_dir):
    path = glue_copy / folder / f"{split}.tsv"
    line = 3  # SST-2/STS-B: the second example (line 1 is the header); CoLA has no header
    _replace_label(path, line, value, column=1 if task == "cola" else -1)
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, glue_copy, "--task", task))
    assert f"{path}, line {line}: {expected}" in err


@pytest.mark.parametrize("split", ["train", "dev"])
def test_a_file_with_only_a_header_is_refused_when_read(split, capsys, tmp_path, glue_copy, tiny_bert_dir):
    path = glue_copy / "SST-2" / f"{split}.tsv"
    path.write_text("sentence\tlabel\n")
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, glue_copy, "--task", "sst2"))
    assert f"{path} has a header but no examples" in err


# ---------------------------------------------------------------------------------------------
# --max_seq_length and the model's positions
# ---------------------------------------------------------------------------------------------

def test_max_seq_length_beyond_the_models_positions_is_refused(capsys, tmp_path, tiny_bert_dir, tiny_glue_dir,
                                                               tiny_gpt2_dir, tiny_llama_dir, tiny_alpaca_file):
    # tiny BERT: max_position_embeddings 128
    for command in ("train", "plan"):
        err = refused(capsys, tmp_path, command, *tiny_train(tiny_bert_dir, tiny_glue_dir, "--max_seq_length", "2382"),
                      out_flag="--output_dir" if command == "train" else None)
        assert f"--max_seq_length: (2382) is more than the 128 positions model `{tiny_bert_dir}` can encode" in err
        assert "Use --max_seq_length 128 or less" in err
    # decoders: GPT-2's n_positions and Llama's max_position_embeddings (256 in the tiny models)
    for model in (tiny_gpt2_dir, tiny_llama_dir):
        err = refused(capsys, tmp_path, "train", "--task", "alpaca", "--model", model, "--train_file",
                      tiny_alpaca_file, "--method", "lora", "--eval_size", "8", "--max_seq_length", "300", "--quiet")
        assert "--max_seq_length: (300) is more than the 256 positions" in err
        assert "Use --max_seq_length 256 or less" in err


def test_the_default_max_seq_length_is_capped_to_the_models_positions(tiny_llama_dir, tiny_alpaca_file):
    from rankwise.data.prepare import prepare_task

    cfg = prepare(RunConfig(task="alpaca", model=str(tiny_llama_dir), train_file=str(tiny_alpaca_file),
                            method="lora", eval_size=8, num_generations=0))
    assert cfg.max_seq_length == 512  # the alpaca default, more than the tiny model's 256 positions
    assert prepare_task(cfg).info["max_seq_length"] == 256


def test_position_limits_per_architecture():
    from transformers import BertConfig, GPT2Config, LlamaConfig, RobertaConfig

    from rankwise.models import position_limit

    assert position_limit(BertConfig()) == 512
    assert position_limit(RobertaConfig(max_position_embeddings=514, pad_token_id=1)) == 512  # ids start at 2
    assert position_limit(GPT2Config(n_positions=1024)) == 1024
    assert position_limit(LlamaConfig(max_position_embeddings=8192)) == 8192


def test_predict_refuses_a_max_seq_length_beyond_the_models_positions(capsys, tmp_path, tiny_glue_dir):
    from transformers import AutoModelForSequenceClassification

    from conftest import minilm_tokenizer, tiny_bert_config

    model_dir = tmp_path / "classifier"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(tiny_bert_config(num_labels=2)).save_pretrained(model_dir)
    minilm_tokenizer().save_pretrained(model_dir)
    inputs = tiny_glue_dir / "SST-2" / "dev.tsv"
    out = tmp_path / "predictions.jsonl"
    err = refused(capsys, tmp_path, "predict", "--model", model_dir, "--task", "sst2", "--input", inputs, "--out",
                  out, "--max_seq_length", "2382", "--quiet", out_flag=None)
    assert "--max_seq_length: (2382) is more than the 128 positions" in err and not out.exists()
    assert run_cli("predict", "--model", model_dir, "--task", "sst2", "--input", inputs, "--out", out,
                   "--max_seq_length", "128", "--quiet") == 0


# ---------------------------------------------------------------------------------------------
# Files: not UTF-8, directories, other suffixes
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["config", "rank_file"])
def test_a_file_that_is_not_utf8_is_named(option, capsys, tmp_path, tiny_bert_dir, tiny_glue_dir):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("label: caf\xe9\n".encode("latin-1"))
    args = ["--config", path] if option == "config" else ["--allocation", "custom", "--rank_file", path]
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, tiny_glue_dir, *args))
    assert f"--{option}: `{path}` is not UTF-8 text (byte 0xe9 at offset 10). Save it as UTF-8" in err


@pytest.mark.parametrize("option", ["config", "rank_file", "train_file"])
def test_a_directory_given_for_a_file_is_called_a_directory(option, capsys, tmp_path, tiny_bert_dir, tiny_glue_dir,
                                                            tiny_llama_dir):
    folder = tmp_path / "folder"
    folder.mkdir()
    if option == "train_file":
        args = ["--task", "alpaca", "--model", tiny_llama_dir, "--method", "lora", "--train_file", folder]
    else:
        args = tiny_train(tiny_bert_dir, tiny_glue_dir, *(["--config", folder] if option == "config" else
                                                         ["--allocation", "custom", "--rank_file", folder]))
    err = refused(capsys, tmp_path, "train", *args)
    assert f"--{option}: `{folder}` is a directory, not a file" in err and "does not exist" not in err


def test_data_dir_and_glue_files_of_the_wrong_kind(capsys, tmp_path, glue_copy, tiny_bert_dir):
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, glue_copy / "SST-2" / "train.tsv"))
    assert "--data_dir: `" in err and "is a file, not a directory" in err
    dev = glue_copy / "SST-2" / "dev.tsv"
    dev.unlink()
    dev.mkdir()
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, glue_copy, "--task", "sst2"))
    assert f"{dev} is a directory, not a GLUE TSV file" in err


@pytest.mark.parametrize("name,text,expected", [
    ("run.txt", "{rank: 8", "--config: `{path}` is neither valid JSON (Expecting property name enclosed in double "
                            "quotes at line 1, column 2) nor valid YAML ("),
    ("run.txt", "{rank: 8", "both were tried because its suffix `.txt` is not .json, .yaml or .yml. Fix the syntax"),
    ("run.json", "rank: 8\n", "--config: `{path}` is not valid JSON (read as JSON because of its `.json` suffix)"),
    ("run.yml", "rank: [8\n", "--config: `{path}` is not valid YAML (read as YAML because of its `.yml` suffix)"),
    ("run.cfg", "just words\n", "--config: `{path}` (read as YAML) holds a str, not a mapping"),
])
def test_a_config_file_error_says_what_it_was_read_as(name, text, expected, capsys, tmp_path):
    path = tmp_path / name
    path.write_text(text)
    err = refused(capsys, tmp_path, "train", "--config", path)
    assert expected.replace("{path}", str(path)) in err


def test_a_config_file_with_another_suffix_is_read_as_json_or_yaml(tmp_path):
    from rankwise.cli import build_parser

    for name, text in (("a.txt", '{"rank": 6}'), ("b.conf", "rank: 6\n")):
        (tmp_path / name).write_text(text)
        assert config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / name)])).rank == 6


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["18446744073709551616", "-1", "100000000000000000000000"])
def test_a_seed_outside_torchs_range_is_refused(seed, capsys, tmp_path):
    err = refused(capsys, tmp_path, "train", "--seed", seed)
    assert f"--seed: must be in [0, 2^64-1], got {seed}" in err and "below 2^64" in err


def test_the_largest_seed_is_accepted_and_torch_takes_it():
    cfg = prepare(RunConfig(seed=2**64 - 1))
    assert torch.Generator().manual_seed(cfg.seed).initial_seed() == 2**64 - 1


def test_seed_and_budget_help_say_what_they_promise(capsys):
    with pytest.raises(SystemExit):
        run_cli("train", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "same torch thread count" in text and "0 to 2^64-1" in text
    assert "default: uniform --rank's parameters; `learned` takes its budget from --rank_average or " \
        "--memory_start" in text


# ---------------------------------------------------------------------------------------------
# Budgets and ranks: the option that caused it is the one named
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args,expected,fix", [
    # tiny BERT: 12 LoRA-XS matrices, ranks 5-30 hold [300, 10,800] parameters
    (["--allocation", "learned", "--memory_start", "100000"],
     "--memory_start: budget 100,000 is outside what 12 target matrices can hold with ranks in [5, 30]: "
     "[300, 10,800] parameters", "Give --memory_start between 300 and 10,800"),
    (["--allocation", "learned", "--memory_start", "3000", "--memory_end", "50000", "--epochs_memory_start_to_end",
      "1"], "--memory_end: budget 50,000 is outside", "Give --memory_end between 300 and 10,800"),
])
def test_an_infeasible_budget_names_the_option_given(args, expected, fix, capsys, tmp_path, tiny_bert_dir,
                                                    tiny_glue_dir):
    err = refused(capsys, tmp_path, "train", *tiny_train(tiny_bert_dir, tiny_glue_dir, *args))
    assert expected in err and fix in err and "--rank_average:" not in err


@pytest.mark.parametrize("args,expected", [
    # tiny BERT: every target matrix is 32×32 or 32×64, so ranks above 32 do not fit
    (["--rank", "40"], "--rank: (40) gives `bert.encoder.layer.0.attention.self.query` rank 40"),
    (["--allocation", "attention_heavy", "--rank_attention", "40", "--rank_mlp", "4"],
     "--rank_attention: (40) gives `bert.encoder.layer.0.attention.self.query` rank 40"),
    (["--allocation", "attention_heavy", "--rank_attention", "4", "--rank_mlp", "40"],
     "--rank_mlp: (40) gives `bert.encoder.layer.0.output.dense` rank 40"),
    (["--allocation", "linear_decay", "--rank_first", "4", "--rank_last", "40"],
     "--rank_last: (40) gives `bert.encoder.layer.2.attention.self.query` rank 40"),
    (["--allocation", "empirical", "--rank", "30"], "--rank: (30) gives `bert.encoder.layer.1.attention.self.query` "
                                                    "rank 36"),
    (["--allocation", "linear_decay", "--rank_first", "16", "--rank_last", "4", "--match_budget", "--budget",
      "100000"], "--budget: (100000) with --match_budget rescales the ranks to 100,000 parameters, which gives"),
    (["--allocation", "linear_decay", "--rank_first", "16", "--rank_last", "4", "--match_budget", "--rank", "31"],
     "--rank: (31) with --match_budget rescales the ranks to uniform rank 31's parameters, which gives"),
    (["--allocation", "linear_decay", "--rank_first", "16", "--rank_last", "4", "--match_budget", "--rank", "1"],
     "--rank: sets the --match_budget budget to 12 parameters (uniform rank's), which cannot give every matrix"),
    (["--allocation", "custom", "--rank_file", "{layers}"], "--rank_file: `{layers}` gives "
                                                            "`bert.encoder.layer.1.attention.self.query` rank 40"),
    (["--allocation", "custom", "--rank_file", "{modules}", "--rank", "40"],
     "--rank: (40), the rank of matrices `{modules}` does not set, gives `bert.encoder.layer.0.attention.self.value`"),
])
@pytest.mark.parametrize("command", ["train", "plan"])
def test_too_large_ranks_name_the_option_that_set_them(command, args, expected, capsys, tmp_path, tiny_bert_dir,
                                                      tiny_glue_dir):
    layers, modules = tmp_path / "layers.json", tmp_path / "modules.yaml"
    layers.write_text(json.dumps({"layer_ranks": [4, 40, 4]}))
    modules.write_text("module_ranks:\n  query: 4\n")
    args = [a.replace("{layers}", str(layers)).replace("{modules}", str(modules)) for a in args]
    err = refused(capsys, tmp_path, command, *tiny_train(tiny_bert_dir, tiny_glue_dir, *args),
                  out_flag="--output_dir" if command == "train" else None)
    assert expected.replace("{layers}", str(layers)).replace("{modules}", str(modules)) in err
    field = expected.split(":")[0]
    assert f"{'Lower it' if field == '--rank_file' else ('Raise ' if 'cannot give' in expected else 'Lower ') + field}" \
        in err


def test_sweep_file_that_is_a_directory_or_not_utf8(tmp_path, capsys):
    from conftest import run_cli

    (tmp_path / "dir.yaml").mkdir()
    assert run_cli("sweep", tmp_path / "dir.yaml", "--dry-run") == 2
    assert "is a directory, not a file" in capsys.readouterr().err
    (tmp_path / "latin1.yaml").write_bytes("base: {label: caf\xe9}\n".encode("latin-1"))
    assert run_cli("sweep", tmp_path / "latin1.yaml", "--dry-run") == 2
    assert "is not UTF-8 text" in capsys.readouterr().err


def test_a_sweep_drops_alpaca_only_options_for_its_glue_runs(tmp_path):
    from rankwise.sweep import parse_sweep, point_values

    spec = parse_sweep({"base": {"eval_size": 50}, "grid": {"task": ["cola", "alpaca"]}})
    points = point_values(spec)
    assert [p.get("eval_size") for p in points] == [None, 50]
