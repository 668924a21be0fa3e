"""No input ignored (issue 32): every file given is read and checked, every empty or repeated list of a sweep or
lr-sweep is refused, and every message names the flag the command was given (`rankwise glue --epoch`, `rankwise
placement --config_file`, `$RANKWISE_DATA_DIR`), never a flag that command does not take."""

import json

import pytest
import yaml

from conftest import run_cli
from rankwise.errors import ConfigError
from rankwise.sweep import parse_sweep


def err_of(capsys, *args) -> str:
    """The message of a command that exits 2 (argparse's refusals exit through SystemExit)."""
    try:
        code = run_cli(*args)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    return capsys.readouterr().err


# --- sweeps ---------------------------------------------------------------------------------------------------

def test_an_empty_variants_list_is_refused_not_run_as_the_base(tmp_path):
    with pytest.raises(ConfigError) as err:
        parse_sweep({"base": {"task": "cola"}, "variants": []}, source="s.yaml")
    assert "`variants` is an empty list" in str(err.value) and "remove the `variants:` key" in str(err.value)
    assert parse_sweep({"base": {"task": "cola"}, "grid": {}})["variants"] == []  # no key: the base alone


@pytest.mark.parametrize("extra,expected", [
    (["--seeds", ""], "argument --seeds: is empty; give the seeds to run"),
    (["--seeds", "0,1,0"], "argument --seeds: repeats a seed (0,1,0)"),
    (["--only", "task="], "argument --only: `task=` names no value"),
    (["--only", "task=cola,cola"], "argument --only: `task=cola,cola` repeats a value"),
    (["--set", "rank=2", "--set", "rank=4"], "--set rank: is given more than once"),
    (["--set", "data_dir=/x", "--data_dir", "/y"], "--data_dir: and --set data_dir=... both set the data directory"),
])
def test_sweep_flags_with_empty_or_repeated_values_are_refused(extra, expected, tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"base": {"task": "cola"}, "seeds": [0, 1], "output_dir": str(tmp_path / "r")}))
    assert expected in err_of(capsys, "sweep", path, "--dry-run", *extra)
    assert not (tmp_path / "r").exists()


# --- lr-sweep ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,expected", [
    (["--lrs", "1e-3", "0.001"], "--lrs: lists 0.001 twice (0.001 0.001). List each value once"),
    (["--seeds", "0", "1", "0"], "--seeds: lists 0 twice (0 1 0)"),
    (["--ranks", "4", "16", "4"], "--ranks: lists 4 twice (4 16 4)"),
    (["--alpha_policy", "constant", "constant"], "--alpha_policy: lists constant twice"),
    (["--full-finetune", "--full_lrs", "1e-5", "1e-5", "--include_full"], "--include_full: does not apply to a sweep "
                                                                          "of full fine-tuning"),
    (["--method", "full", "--ranks", "4"], "--ranks: does not apply to a sweep of full fine-tuning"),
    (["--seed", "1", "--seeds", "0", "1"], "--seed: and --seeds both give the seeds"),
])
def test_lr_sweep_lists_are_refused_when_repeated_or_unread(extra, expected, tiny_bert_dir, tiny_glue_dir, tmp_path,
                                                             capsys):
    err = err_of(capsys, "lr-sweep", "--task", "sst2", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir,
                 "--output_dir", tmp_path / "r", "--dry-run", *extra)
    assert expected in err and not (tmp_path / "r").exists()


# --- placement --------------------------------------------------------------------------------------------------

def placement(model, alpaca, out, *extra):
    return ("placement", "--model_name", model, "--train_file", alpaca, "--dataset_size", "20", "--num_epochs", "1",
            "--output_dir", out, "--dry_run", *extra)


def test_placement_reads_every_config_file_and_names_its_own_flags(tiny_llama_dir, tiny_alpaca_file, tmp_path,
                                                                   capsys):
    broken, five = tmp_path / "broken.json", tmp_path / "five.json"
    broken.write_text("{broken")
    five.write_text(json.dumps({"strategy_name": "custom", "layer_ranks": [4, 4, 4, 4, 4]}))
    out = tmp_path / "out"
    cases = [
        (["--lora_rank", "8", "--config_file", broken], "--config_file: `" + str(broken) + "` is not valid JSON"),
        (["--strategy", "linear_decay", "--config_file", five],
         "--config_file: gives custom per-layer ranks, which only --strategy custom reads, but --strategy is "
         "`linear_decay`. Add --strategy custom, or drop --config_file"),
        (["--lora_rank", "8", "--custom_ranks", "[4, 4, 4]"], "--custom_ranks: gives custom per-layer ranks, which "
                                                             "only --strategy custom reads, but --lora_rank trains"),
        (["--strategy", "custom", "--config_file", five], f"--config_file: `layer_ranks` in `{five}` has 5 entries but "
                                                          "the model has 3 layers"),
        (["--strategy", "custom", "--custom_ranks", "[4, 4]"], "--custom_ranks: the list [4, 4] has 2 entries but the "
                                                               "model has 3 layers"),
        (["--lora_rank", "8", "--num_epochs", "0"], "--num_epochs: must be positive, got 0"),
        (["--lora_rank", "8", "--batch_size", "0"], "--batch_size: must be a positive integer, got 0"),
    ]
    for extra, expected in cases:
        err = err_of(capsys, *placement(tiny_llama_dir, tiny_alpaca_file, out, *extra))
        assert expected in err, err
        assert "--rank_file" not in err and "--num_train_epochs" not in err and "layer_ranks.json" not in err
    assert not out.exists()


# --- glue, environment, values ------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra,expected,wrong", [
    (["--target_task", "colaa"], "--target_task: unknown task `colaa`. Did you mean `cola`?", "--task:"),
    (["--lr", "-1"], "--lr: must be positive, got -1.0", "--learning_rate"),
    (["--epoch", "0"], "--epoch: must be positive, got 0", "--num_train_epochs"),
])
def test_glue_errors_name_the_studys_flags(extra, expected, wrong, tiny_bert_dir, tiny_glue_dir, tmp_path, capsys):
    err = err_of(capsys, "glue", "--model", tiny_bert_dir, "--data_dir", tiny_glue_dir, "--output_dir", tmp_path / "r",
                 "--dry_run", *extra)
    assert expected in err and wrong not in err


def test_a_bad_data_directory_is_named_where_it_came_from(tiny_bert_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANKWISE_DATA_DIR", str(tmp_path / "nowhere"))
    err = err_of(capsys, "train", "--model", tiny_bert_dir, "--output_dir", tmp_path / "r")
    assert f"$RANKWISE_DATA_DIR: directory `{tmp_path / 'nowhere'}` does not exist" in err and "--data_dir:" not in err
    err = err_of(capsys, "train", "--model", tiny_bert_dir, "--output_dir", tmp_path / "r", "--data_dir", tmp_path / "x")
    assert f"--data_dir: directory `{tmp_path / 'x'}` does not exist" in err


def test_an_absurd_alpha_and_an_empty_pattern_are_refused_before_any_work(tiny_bert_dir, tmp_path, capsys):
    err = err_of(capsys, "train", "--model", tiny_bert_dir, "--lora_alpha", "1e30", "--output_dir", tmp_path / "r")
    assert "--lora_alpha: (1e+30) scales the adapter's update by alpha/r" in err and "learning_rate:" not in err
    ranks = tmp_path / "ranks.yaml"
    ranks.write_text(yaml.safe_dump({"module_ranks": {"": 8, "query": 4}}))
    err = err_of(capsys, "plan", "--model", tiny_bert_dir, "--allocation", "custom", "--rank_file", ranks)
    assert "has an empty pattern, which matches every matrix. Give `default: R`" in err
    assert not (tmp_path / "r").exists()
