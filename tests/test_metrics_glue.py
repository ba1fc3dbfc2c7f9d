import math

import numpy as np
import pytest
import torch

from lora_repro.metrics.glue import (
    PRIMARY_METRIC,
    accuracy,
    f1,
    glue_metrics,
    matthews_correlation,
    pearson,
    spearman,
)

# Hand-computed cases. The 2x2 matrix: tp=3, fn=0, fp=1, tn=2.
HAND_PREDICTIONS = [1, 1, 1, 1, 0, 0]
HAND_LABELS = [1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize(
    "metric, predictions, labels, expected",
    [
        (accuracy, [1, 0, 1, 1], [1, 0, 0, 1], 0.75),
        (f1, HAND_PREDICTIONS, HAND_LABELS, 2 * 3 / (2 * 3 + 1 + 0)),
        (f1, [1, 0, 0, 1], [1, 1, 0, 0], 0.5),  # tp=1, fp=1, fn=1
        (f1, [0, 0], [0, 0], 0.0),  # no positives at all: defined as 0
        (
            matthews_correlation,
            HAND_PREDICTIONS,
            HAND_LABELS,
            (3 * 2 - 1 * 0) / math.sqrt(4 * 3 * 3 * 2),
        ),
        (matthews_correlation, [0, 1, 0, 1], [0, 1, 0, 1], 1.0),
        (matthews_correlation, [1, 0, 1, 0], [0, 1, 0, 1], -1.0),
        (matthews_correlation, [1, 1, 1, 1], [0, 1, 0, 1], 0.0),  # constant prediction
        (matthews_correlation, [0, 1, 2, 0, 1, 2], [0, 1, 2, 0, 1, 2], 1.0),  # three classes
        (pearson, [1.0, 2.0, 3.0], [2.0, 4.0, 6.0], 1.0),
        (pearson, [1.0, 2.0, 3.0], [3.0, 2.0, 1.0], -1.0),
        (pearson, [1.0, 1.0, 1.0], [3.0, 2.0, 1.0], 0.0),  # constant prediction
        (spearman, [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 16.0], 1.0),
        (spearman, [4.0, 3.0, 2.0, 1.0], [1.0, 4.0, 9.0, 16.0], -1.0),
        (
            spearman,
            [1.0, 2.0, 2.0, 3.0],
            [1.0, 2.0, 3.0, 4.0],
            math.sqrt(0.9),
        ),  # tie: ranks 2.5, 2.5
    ],
)
def test_hand_computed(metric, predictions, labels, expected):
    assert metric(np.array(predictions), np.array(labels)) == pytest.approx(expected)


def test_pearson_and_spearman_differ_on_a_curve():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, x**3) < 0.99 and spearman(x, x**3) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "task, keys, primary",
    [
        ("mnli", {"accuracy"}, "accuracy"),
        ("sst2", {"accuracy"}, "accuracy"),
        ("mrpc", {"accuracy", "f1"}, "accuracy"),
        ("qqp", {"accuracy", "f1"}, "accuracy"),
        ("cola", {"matthews_correlation"}, "matthews_correlation"),
        ("qnli", {"accuracy"}, "accuracy"),
        ("rte", {"accuracy"}, "accuracy"),
        ("wnli", {"accuracy"}, "accuracy"),
        ("stsb", {"pearson", "spearman"}, "pearson"),
    ],
)
def test_keys_and_primary(task, keys, primary):
    assert PRIMARY_METRIC[task] == primary
    predictions = [0.5, 1.0, 4.0, 2.0] if task == "stsb" else [1, 0, 1, 1]
    result = glue_metrics(
        task, predictions, [1.0, 0.0, 5.0, 2.5] if task == "stsb" else [1, 0, 0, 1]
    )
    assert set(result) == keys | {"primary"}
    assert result["primary"] == result[primary]


def test_logits_are_argmaxed_and_tensors_accepted():
    logits = torch.tensor([[2.0, -1.0], [0.1, 0.3], [0.0, 5.0], [3.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 1])
    assert glue_metrics("mrpc", logits, labels) == {"accuracy": 0.75, "f1": 0.8, "primary": 0.75}


def test_regression_outputs_of_shape_n_by_1():
    scores = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.bfloat16)
    result = glue_metrics("stsb", scores, [0.5, 1.5, 4.0])
    assert result["spearman"] == pytest.approx(1.0) and result["pearson"] < 1.0


def test_mnli_three_classes():
    logits = np.eye(3)[[0, 1, 2, 2]]
    assert glue_metrics("mnli", logits, [0, 1, 2, 0])["accuracy"] == 0.75


@pytest.mark.parametrize(
    "task, predictions, labels, error, pattern",
    [
        ("sst3", [1], [1], ValueError, r"unknown GLUE task 'sst3'"),
        (
            "sst2",
            [1, 0],
            [1, 0, 1],
            ValueError,
            r"sst2: predictions of shape \(2,\) do not match .*\(3,\)",
        ),
        ("cola", [], [], ValueError, r"cola: no predictions"),
    ],
)
def test_errors(task, predictions, labels, error, pattern):
    with pytest.raises(error, match=pattern):
        glue_metrics(task, predictions, labels)


def test_agrees_with_scipy_and_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    predictions[:300] = labels[:300]
    assert f1(predictions, labels) == pytest.approx(sklearn_metrics.f1_score(labels, predictions))
    assert matthews_correlation(predictions, labels) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(labels, predictions)
    )
    three_way = rng.integers(0, 3, (2, 500))
    assert matthews_correlation(*three_way) == pytest.approx(
        sklearn_metrics.matthews_corrcoef(*three_way[::-1])
    )
    scores = rng.normal(size=500)
    noisy = np.round(scores + rng.normal(size=500), 1)  # rounding makes ties
    assert pearson(noisy, scores) == pytest.approx(stats.pearsonr(noisy, scores)[0])
    assert spearman(noisy, scores) == pytest.approx(stats.spearmanr(noisy, scores)[0])
