"""GLUE data and metrics: the real TSV files parse to the row and label counts in shared/data/README.md
(MRPC's BOM, RTE's quote characters), bad files get one clear error, and metrics equal scikit-learn/scipy."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from conftest import shared_glue
from rankwise.data import compute_metrics, load_glue
from rankwise.data.glue import TASKS, read_tsv
from rankwise.errors import DataError

# (train rows, dev rows, label counts of train as {label index: count}) from shared/data/README.md
REAL = {
    "cola": (8551, 1043, {0: 2528, 1: 6023}),
    "sst2": (67349, 872, {0: 29780, 1: 37569}),
    "mrpc": (3668, 408, {0: 1194, 1: 2474}),
    "rte": (2490, 277, {0: 1249, 1: 1241}),  # entailment, not_entailment
    "stsb": (5749, 1500, None),
}


@pytest.mark.parametrize("task", sorted(REAL))
def test_real_files_parse_to_documented_counts(task):
    data = load_glue(task, str(shared_glue().parent))  # data_dir may be the parent holding glue/
    n_train, n_dev, counts = REAL[task]
    assert len(data.train) == n_train and len(data.evals["eval"]) == n_dev
    assert all(len(e.texts) == len(TASKS[task].text_columns) for e in data.train)
    if counts:
        labels = [e.label for e in data.train]
        assert {k: labels.count(k) for k in counts} == counts
    else:
        scores = np.array([e.label for e in data.train])
        assert scores.min() >= 0 and scores.max() <= 5


def test_mrpc_bom_and_rte_quotes_are_kept_as_text():
    glue = shared_glue()
    mrpc = read_tsv(glue / "MRPC" / "train.tsv", TASKS["mrpc"])
    assert mrpc[0].texts[0].startswith("Amrozi accused his brother")
    rte = load_glue("rte", str(glue)).train
    quoted = [e for e in rte if e.texts[0].startswith('"')]
    assert quoted, "RTE has sentences starting with a quote character"
    assert all("\t" not in t for e in quoted for t in e.texts)


def test_bad_files_name_file_and_line(tmp_path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\nok\t0\n")
    with pytest.raises(DataError, match=r"train.tsv, line 3: label `maybe` is not one of \['0', '1'\]"):
        load_glue("sst2", str(tmp_path))
    (folder / "train.tsv").write_text("text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=r"header has no column\(s\) \['sentence'\]"):
        load_glue("sst2", str(tmp_path))
    with pytest.raises(DataError, match=r"task rte: missing .*RTE/train.tsv.*has task folders \['SST-2'\]"):
        load_glue("rte", str(tmp_path))


def test_classification_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 500)
    pred = np.where(rng.random(500) < 0.7, gold, 1 - gold)
    assert compute_metrics("cola", pred, gold)["matthews_correlation"] == pytest.approx(matthews_corrcoef(gold, pred),
                                                                                        abs=1e-12)
    mrpc = compute_metrics("mrpc", pred, gold)
    assert mrpc["accuracy"] == pytest.approx(accuracy_score(gold, pred), abs=1e-12)
    assert mrpc["f1"] == pytest.approx(f1_score(gold, pred), abs=1e-12)
    qqp = compute_metrics("qqp", pred, gold)
    assert set(qqp) == {"accuracy", "f1"}
    pred3, gold3 = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    assert compute_metrics("mnli", pred3, gold3)["accuracy"] == pytest.approx(accuracy_score(gold3, pred3), abs=1e-12)


def test_regression_metrics_equal_scipy():
    rng = np.random.default_rng(1)
    gold = rng.uniform(0, 5, 400)
    pred = gold + rng.normal(0, 1.0, 400)
    out = compute_metrics("stsb", pred, gold)
    assert out["pearson"] == pytest.approx(pearsonr(pred, gold)[0], abs=1e-12)
    assert out["spearmanr"] == pytest.approx(spearmanr(pred, gold)[0], abs=1e-12)
    assert compute_metrics("stsb", np.full(400, 2.5), gold) == {"pearson": 0.0, "spearmanr": 0.0}  # constant: no NaN


def test_every_task_has_its_design_metrics():
    expected = {"cola": ["matthews_correlation"], "sst2": ["accuracy"], "mrpc": ["accuracy", "f1"],
                "qnli": ["accuracy"], "rte": ["accuracy"], "stsb": ["pearson", "spearmanr"],
                "qqp": ["accuracy", "f1"], "mnli": ["accuracy"], "wnli": ["accuracy"]}
    for name, metrics in expected.items():
        assert set(metrics) <= set(TASKS[name].metrics), name
    assert set(TASKS["mnli"].eval_files) == {"eval", "eval_mismatched"}
