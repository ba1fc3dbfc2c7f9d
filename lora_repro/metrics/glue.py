"""GLUE metrics as the paper reports them: accuracy, F1, Matthews correlation, Pearson, Spearman.

    glue_metrics("cola", logits, labels) -> {"matthews_correlation": 0.61, "primary": 0.61}

Values are fractions (0.875, not 87.5); tables scale them. `primary` repeats the paper's
headline metric for the task (PRIMARY_METRIC), so best-epoch selection needs no task logic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lora_repro.data.glue import GLUE_TASKS, glue_task

PRIMARY_METRIC: dict[str, str] = {name: task.primary_metric for name, task in GLUE_TASKS.items()}


def glue_metrics(task: str, predictions, labels) -> dict[str, float]:
    """predictions: class ids or logits (n, num_labels) for classification; scores for stsb."""
    spec = glue_task(task)
    predictions, labels = _as_numpy(predictions), _as_numpy(labels)
    if spec.is_regression:
        predictions = predictions.reshape(-1)  # a regression head's (n, 1)
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(
            f"{task}: predictions of shape {predictions.shape} do not match "
            f"labels of shape {labels.shape}"
        )
    if len(labels) == 0:
        raise ValueError(f"{task}: no predictions to score")
    scores = {name: float(METRICS[name](predictions, labels)) for name in spec.metrics}
    return {**scores, "primary": scores[spec.primary_metric]}


def accuracy(predictions, labels) -> float:
    return float(np.mean(predictions == labels))


def f1(predictions, labels) -> float:
    """Binary F1 of the positive class (1), as GLUE scores MRPC and QQP."""
    true_positive = np.sum((predictions == 1) & (labels == 1))
    wrong = np.sum(predictions != labels)  # false positives + false negatives
    return _ratio(2 * true_positive, 2 * true_positive + wrong)


def matthews_correlation(predictions, labels) -> float:
    """Matthews correlation from the confusion matrix (Gorodkin's form, any number of classes)."""
    classes = np.union1d(predictions, labels)
    confusion = pd.crosstab(labels, predictions).reindex(
        index=classes, columns=classes, fill_value=0
    )
    confusion = confusion.to_numpy(dtype=np.float64)
    n, correct = confusion.sum(), np.trace(confusion)
    true_counts, predicted_counts = confusion.sum(axis=1), confusion.sum(axis=0)
    numerator = correct * n - true_counts @ predicted_counts
    denominator = np.sqrt(
        (n**2 - predicted_counts @ predicted_counts) * (n**2 - true_counts @ true_counts)
    )
    return _ratio(numerator, denominator)


def pearson(predictions, labels) -> float:
    x = predictions.astype(np.float64) - predictions.mean()
    y = labels.astype(np.float64) - labels.mean()
    return _ratio(x @ y, np.sqrt((x @ x) * (y @ y)))


def spearman(predictions, labels) -> float:
    """Pearson correlation of the ranks, ties sharing their average rank (as scipy does)."""
    ranks = [
        pd.Series(values).rank(method="average").to_numpy() for values in (predictions, labels)
    ]
    return pearson(*ranks)


METRICS = {
    "accuracy": accuracy,
    "f1": f1,
    "matthews_correlation": matthews_correlation,
    "pearson": pearson,
    "spearman": spearman,
}


def _ratio(numerator, denominator) -> float:
    # An undefined correlation (constant predictions) counts as none, as sklearn's MCC does, so
    # that best-epoch selection never compares against NaN.
    return float(numerator / denominator) if denominator > 0 else 0.0


def _as_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor, on any device and in any dtype
        values = values.detach().cpu()
        values = values.float() if values.is_floating_point() else values
        return values.numpy()
    return np.asarray(values)
