"""Bad input stops before any work: one message naming the field and the fix, exit status 2, nothing written."""

import pytest

from conftest import run_cli
from rankwise.config import RunConfig, config_from_dict, prepare
from rankwise.errors import ConfigError


def bad(capsys, tmp_path, *args):
    out = tmp_path / "run"
    code = run_cli("train", "--output_dir", out, *args)
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists(), "nothing may be written for bad input"
    assert err.count("error:") == 1
    return err


@pytest.mark.parametrize("args,expected", [
    (["--task", "colaa"], "--task: unknown task `colaa`. Did you mean `cola`?"),
    (["--method", "loar"], "--method: unknown value `loar`. Did you mean `lora`?"),
    (["--allocation", "learned", "--rank_min", "30", "--rank_max", "5"], "--rank_min: (30) is greater than --rank_max (5)"),
    (["--allocation", "learned", "--rank_min", "5", "--rank_max", "30", "--rank_average", "40"],
     "--rank_average: (40) is outside [rank_min, rank_max] = [5, 30]"),
    (["--allocation", "learned", "--alpha_scheduler", "exponential", "--alpha_min", "0"],
     "--alpha_min: must be > 0 with --alpha_scheduler exponential"),
    (["--allocation", "learned", "--num_train_epochs", "5", "--memory_start", "3000", "--memory_end", "6000",
      "--epochs_memory_start", "3", "--epochs_memory_start_to_end", "5"], "the budget schedule needs 8 epochs"),
    (["--learning_rate", "nan"], "--learning_rate: is nan"),
    (["--allocation", "custom"], "--rank_file: is required by --allocation custom"),
    (["--allocation", "linear_decay", "--rank_first", "16"], "--rank_last: is required by --allocation linear_decay"),
    (["--method", "full", "--allocation", "learned"], "--allocation: does not apply to --method full"),
    (["--data_dir", "/does/not/exist"], "--data_dir: directory `/does/not/exist` does not exist"),
])
def test_bad_input_is_one_clear_message(capsys, tmp_path, args, expected):
    assert expected in bad(capsys, tmp_path, *args)


def test_unknown_key_in_config_file(capsys, tmp_path):
    (tmp_path / "c.yaml").write_text("task: cola\nlearning_rat: 0.1\n")
    err = bad(capsys, tmp_path, "--config", tmp_path / "c.yaml")
    assert "--learning_rat: unknown option" in err and "Did you mean `learning_rate`?" in err


def test_config_file_values_and_cli_override(tmp_path):
    (tmp_path / "c.yaml").write_text("task: sst2\nrank: 12\nlearning_rate: 0.002\n")
    from rankwise.cli import build_parser
    from rankwise.config import config_from_args

    args = build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--rank", "4", "--lr", "1e-4"])
    cfg = config_from_args(args)
    assert (cfg.task, cfg.rank, cfg.learning_rate) == ("sst2", 4, 1e-4)


def test_defaults_resolve_by_method():
    assert prepare(RunConfig(method="loraxs")).rank == 25
    lora = prepare(RunConfig(method="lora"))
    assert (lora.rank, lora.learning_rate, lora.cls_learning_rate) == (8, 5e-4, 5e-3)
    full = prepare(RunConfig(method="full"))
    assert full.cls_learning_rate == full.learning_rate == 5e-5
    learned = prepare(RunConfig(allocation="learned", num_train_epochs=4))
    assert (learned.rank_min, learned.rank_max, learned.rank_average, learned.epochs_rank_discrete) == (5, 30, 17.5, 1)


def test_config_from_dict_converts_and_rejects():
    assert config_from_dict({"rank": "8", "match_budget": "true"}).rank == 8
    with pytest.raises(ConfigError, match="--rank: bad value"):
        config_from_dict({"rank": "eight"})


def test_bad_flag_type_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli("train", "--rank", "eight")
    assert exc.value.code == 2
    assert "expected an integer" in capsys.readouterr().err
