"""analysis.verdicts on planted numbers: the rules at their boundaries, the t-intervals by hand, the
weighted metrics against lora_repro.metrics.glue, and the paired bootstrap on arms whose answer is
known by construction."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis import verdicts as v
from lora_repro.metrics.glue import glue_metrics
from lora_repro.records import PREDICTIONS_FILE, atomic_write_json


def interval(low, high, estimate=None):
    return v.Interval((low + high) / 2 if estimate is None else estimate, low, high, "planted")


@pytest.mark.parametrize("low, high, verdict", [
    (-0.005, 0.008, v.CONSISTENT),      # inside ±1 point
    (-0.012, 0.008, v.INCONCLUSIVE),    # crosses -1 point
    (0.011, 0.03, v.CONTRADICTED),      # wholly above +1 point: not on par either
    (-0.03, -0.011, v.CONTRADICTED),    # wholly below
])
def test_equivalence_rule(low, high, verdict):
    assert v.EQUIVALENT_1PT.decide(interval(low, high)) == verdict


@pytest.mark.parametrize("low, high, verdict", [
    (-0.009, 0.02, v.CONSISTENT),
    (0.011, 0.03, v.CONSISTENT),         # better is fine for "on par or better"
    (-0.02, 0.001, v.INCONCLUSIVE),
    (-0.03, -0.0101, v.CONTRADICTED),
])
def test_non_inferiority_rule(low, high, verdict):
    assert v.NON_INFERIOR_1PT.decide(interval(low, high)) == verdict


@pytest.mark.parametrize("low, high, verdict", [
    (0.001, 0.02, v.CONSISTENT), (-0.001, 0.02, v.INCONCLUSIVE), (-0.02, 0.0, v.CONTRADICTED),
    (0.0, 0.0, v.CONTRADICTED),  # exactly the baseline: it learned nothing
])
def test_beats_rule(low, high, verdict):
    assert v.BEATS.decide(interval(low, high)) == verdict


def test_no_interval_is_inconclusive_and_no_runs_not_run():
    assert v.BEATS.decide(v.Interval(0.1, math.nan, math.nan, "one seed")) == v.INCONCLUSIVE
    assert v.BEATS.decide(None) == v.NOT_RUN
    assert "±1 point" in v.EQUIVALENT_1PT.describe()
    assert "lower end ≥ −1 point" in v.NON_INFERIOR_1PT.describe()


def test_reproduced_only_at_the_paper_tier_and_combined_verdicts():
    assert v.tier_verdict(v.CONSISTENT, "paper") == v.REPRODUCED
    assert v.tier_verdict(v.CONSISTENT, "quick") == v.CONSISTENT
    assert v.tier_verdict(v.CONTRADICTED, "paper") == v.CONTRADICTED
    assert v.combine([v.CONSISTENT, v.CONSISTENT]) == v.CONSISTENT
    assert v.combine([v.CONSISTENT, v.INCONCLUSIVE]) == v.INCONCLUSIVE
    assert v.combine([v.CONSISTENT, v.CONTRADICTED]) == v.CONTRADICTED
    assert v.combine([v.CONSISTENT, v.NOT_RUN]) == v.INCONCLUSIVE
    assert v.combine([v.NOT_RUN]) == v.NOT_RUN


def test_seed_intervals_by_hand():
    paired = v.seed_interval({0: 0.83, 1: 0.84, 2: 0.85}, {0: 0.82, 1: 0.82, 2: 0.82})
    # differences 1, 2, 3 points: mean 2, sd 1, t(2) = 4.303
    assert paired.estimate == pytest.approx(0.02)
    assert paired.high - paired.estimate == pytest.approx(4.303 * 0.01 / math.sqrt(3))
    assert "paired t over seeds, n=3" in paired.method
    welch = v.seed_interval({0: 0.80, 1: 0.82}, {5: 0.70, 6: 0.74})
    se = math.sqrt(np.var([0.80, 0.82], ddof=1) / 2 + np.var([0.70, 0.74], ddof=1) / 2)
    df = se**4 / ((np.var([0.80, 0.82], ddof=1) / 2) ** 2 + (np.var([0.70, 0.74], ddof=1) / 2) ** 2)
    assert welch.estimate == pytest.approx(0.09)
    assert welch.high - welch.estimate == pytest.approx(v.t_quantile(df) * se)
    assert "Welch t over seeds, n=2 vs 2" in welch.method
    one = v.seed_interval({0: 0.8}, {0: 0.7})
    assert math.isnan(one.low) and "no 95% interval" in one.text()
    constant = v.seed_interval({0: 0.1, 1: 0.3}, 0.0)
    assert constant.estimate == pytest.approx(0.2) and "one-sample" in constant.method


@pytest.mark.parametrize("task, metric", [("sst2", "accuracy"), ("cola", "matthews_correlation"),
                                          ("stsb", "pearson"), ("mrpc", "f1")])
def test_weighted_scores_with_unit_weights_are_the_glue_metrics(task, metric):
    rng = np.random.default_rng(0)
    if metric == "pearson":
        label = rng.uniform(0, 5, 200)
        prediction = label + rng.normal(0, 1, 200)
    else:
        label = rng.integers(0, 2, 200)
        prediction = np.where(rng.uniform(size=200) < 0.8, label, 1 - label)
    expected = glue_metrics(task, prediction, label)[metric]
    assert v.weighted_scores(metric, prediction, label, np.ones((1, 200)))[0] == pytest.approx(expected)
    # weights = counts: the same as scoring the repeated examples
    counts = rng.integers(0, 3, 200)
    repeated = np.repeat(np.arange(200), counts)
    assert v.weighted_scores(metric, prediction, label, counts[None])[0] == pytest.approx(
        glue_metrics(task, prediction[repeated], label[repeated])[metric])


def test_constant_predictions_score_the_majority_rate_and_zero_correlation():
    label = np.array([1] * 7 + [0] * 3)
    constant = v.constant_prediction(label, "accuracy")
    assert (constant == 1).all()
    ones = np.ones((1, 10))
    assert v.weighted_scores("accuracy", constant, label, ones)[0] == pytest.approx(0.7)
    assert v.weighted_scores("matthews_correlation", constant, label, ones)[0] == 0
    assert v.weighted_scores("pearson", v.constant_prediction(label * 1.5, "pearson"),
                             label * 1.5, ones)[0] == 0


def planted_arm(label, accuracy, seeds, rng):
    """Predictions right on a planted share of the examples (exactly accuracy * n), per seed."""
    out = []
    for _ in seeds:
        right = rng.permutation(len(label)) < round(accuracy * len(label))
        out.append((np.where(right, label, 1 - label), label))
    return out


def test_paired_bootstrap_of_one_run_against_itself_is_exactly_zero():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, 500)
    arm = planted_arm(label, 0.8, range(1), rng)
    result = v.paired_bootstrap(arm, arm, "accuracy", draws=300)
    assert result.estimate == 0 and result.low == 0 and result.high == 0  # same examples both arms
    assert v.EQUIVALENT_1PT.decide(result) == v.CONSISTENT
    # three seeds that differ: each arm's seeds are resampled apart, so their spread widens it
    seeds = planted_arm(label, 0.8, range(3), rng)
    spread = v.paired_bootstrap(seeds, seeds, "accuracy", draws=300)
    assert spread.estimate == 0 and spread.low < 0 < spread.high


def test_paired_bootstrap_finds_a_planted_gap_and_its_width_follows_the_dev_set():
    rng = np.random.default_rng(2)
    label = rng.integers(0, 2, 2000)
    better = planted_arm(label, 0.90, range(3), rng)
    worse = planted_arm(label, 0.85, range(3), rng)
    result = v.paired_bootstrap(better, worse, "accuracy", draws=500)
    assert result.estimate == pytest.approx(0.05)
    assert result.low < 0.05 < result.high and result.low > 0.02  # a clear 5-point gap
    assert v.BEATS.decide(result) == v.CONSISTENT
    assert v.BEATS.decide(v.paired_bootstrap(worse, better, "accuracy", draws=500)) == v.CONTRADICTED
    # on a dev set 16x smaller the same gap is far less certain
    small = v.paired_bootstrap([(p[:125], y[:125]) for p, y in better],
                               [(p[:125], y[:125]) for p, y in worse], "accuracy", draws=500)
    assert small.high - small.low > 2 * (result.high - result.low)


def test_paired_bootstrap_refuses_different_dev_sets():
    label = np.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="different dev examples"):
        v.paired_bootstrap([(label, label)], [(label, 1 - label)], "accuracy", draws=10)


def test_a_model_that_predicts_the_majority_class_does_not_beat_the_baseline(tmp_path):
    """The RTE case of issue 13: a run at exactly the majority rate is contradicted."""
    label = np.array([0] * 147 + [1] * 130)  # RTE-sized, majority 53%
    frame = []
    for seed in (0, 1, 2):
        run_dir = tmp_path / f"s{seed}"
        prediction = np.zeros_like(label)
        atomic_write_json(run_dir / PREDICTIONS_FILE, {"epoch": 1, "splits": {"validation": {
            "prediction": prediction.tolist(), "label": label.tolist()}}})
        frame.append({"status": "done", "seed": seed, "primary": 147 / 277, "run_dir": str(run_dir)})
    arm = v.arm_of(pd.DataFrame(frame))
    assert arm.complete and arm.n == 3
    result = v.against_baseline(arm, "accuracy", draws=200)
    assert result.low == result.high == 0
    assert v.BEATS.decide(result) == v.CONTRADICTED


def test_without_predictions_the_comparison_falls_back_to_seeds_and_says_so():
    frame = pd.DataFrame([{"status": "done", "seed": s, "primary": x, "run_dir": None}
                          for s, x in ((0, 0.80), (1, 0.82), (2, 0.84))])
    other = pd.DataFrame([{"status": "done", "seed": s, "primary": x, "run_dir": None}
                          for s, x in ((0, 0.70), (1, 0.71), (2, 0.75))])
    result = v.compare(v.arm_of(frame), v.arm_of(other), "accuracy")
    assert "per-example predictions missing" in result.method and "n=3" in result.method
    assert result.estimate == pytest.approx(0.1)
    assert math.isnan(v.against_baseline(v.arm_of(frame), "accuracy").low)
    assert v.against_baseline(v.arm_of(frame), "matthews_correlation").estimate == pytest.approx(0.82)
    assert v.compare(v.arm_of(frame), v.Arm(), "accuracy") is None


def test_average_over_tasks_goes_draw_by_draw():
    a = v.Interval(0.01, 0, 0.02, "x", np.array([0.0, 0.01, 0.02]))
    b = v.Interval(0.03, 0.02, 0.04, "x", np.array([0.02, 0.03, 0.04]))
    mean = v.average([a, b])
    assert mean.estimate == pytest.approx(0.02)
    np.testing.assert_allclose(mean.draws, [0.01, 0.02, 0.03])
    assert v.average([a, v.Interval(0.0, -1, 1, "seed level")]) is None


def test_against_baseline_refuses_a_metric_without_a_constant_predictor():
    arm = v.Arm(values={0: 0.6})
    with pytest.raises(ValueError, match="no constant predictor for 'bleu'"):
        v.against_baseline(arm, "bleu")
