"""Verdicts from stated rules: every claim of the report is `consistent`, `inconclusive` or
`contradicted` with our runs (or `not run`), decided by a rule kept here and a statistic printed
beside it; `reproduced` only for a consistent result at the paper tier.

The statistic is the 95% interval of a difference between two arms (LoRA vs full FT on a task,
rank 1 vs rank 64, a method vs the constant predictor):

- **paired bootstrap over dev examples and seeds** (`paired_bootstrap`), when every run of both
  arms kept its per-example dev predictions (predictions.json; for BLEU, an NLG run's outputs in
  generations.json, whose per-input n-gram statistics give the corpus BLEU of any resample, as
  Koehn 2004's bootstrap for machine translation): each draw resamples the dev
  examples with replacement, *the same indices for both arms*, and each arm's seeds with
  replacement; the statistic is (mean over the drawn seeds of arm A's metric on the drawn
  examples) − (the same for arm B); the interval is the 2.5% and 97.5% percentiles of 2000 draws.
  It captures both the dev set's sampling error and the seed-to-seed spread.
- **seed level** (`seed_interval`), for older records without predictions: the mean difference
  over seeds with its Student-t interval (paired on the seeds both arms ran, else Welch), n shown.
  One seed per arm gives no interval, so no verdict but `inconclusive`.

Rules (`Rule.decide`), with m the claim's margin:

- "on par" (equivalent): consistent if the whole interval lies inside [-m, +m]; contradicted if it
  lies wholly outside it; inconclusive otherwise.
- "on par or better" (non-inferior): consistent if the lower end >= -m; contradicted if the upper
  end < -m (worse by more than the margin); inconclusive otherwise.
- "X beats Y", and "beats the constant baseline" (Y = the majority class, or the mean for a
  regression, predicted for every dev example): consistent if the lower end > 0; contradicted if
  the upper end <= 0 (X is at best equal); inconclusive otherwise.

Margins: 1 point of the task's metric (x100) for "on par" claims (NON_INFERIOR_1PT: LoRA vs full
FT on GLUE, r=1 vs r=64), 1 BLEU point for E2E's 70.4, 1% for the merged model's latency. The
same bootstrap with metric "mean" takes any per-unit value (e.g. intruders per weight matrix):
units then play the examples' part.

    python -c "from analysis.verdicts import NON_INFERIOR_1PT; print(NON_INFERIOR_1PT.describe())"
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lora_repro.metrics.glue import PRIMARY_METRIC
from lora_repro.metrics.nlg import bleu_from_statistics, bleu_statistics
from lora_repro.records import read_generations, read_predictions

CONSISTENT, INCONCLUSIVE, CONTRADICTED, NOT_RUN = "consistent", "inconclusive", "contradicted", "not run"
REPRODUCED = "reproduced"  # a consistent verdict at the paper tier
VERDICTS = (CONSISTENT, INCONCLUSIVE, CONTRADICTED, NOT_RUN, REPRODUCED)
LEVEL = 0.95
DRAWS = 2000
SEED = 0  # the bootstrap's own seed: the report's numbers are the same every time
CHUNK = 250  # draws resampled at once (a draws x examples weight matrix)
# Student-t 97.5% quantiles by degrees of freedom (beyond 30: the value at 30, a little wide)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060,
        2.056, 2.052, 2.048, 2.045, 2.042)
CONSTANT_PREDICTOR_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson")  # GLUE's
BOOTSTRAP_METRICS = CONSTANT_PREDICTOR_METRICS + ("bleu",)


# -- the statistic -------------------------------------------------------------------------------

@dataclass
class Interval:
    """A difference (arm A - arm B) with its 95% interval and how it was computed."""

    estimate: float
    low: float
    high: float
    method: str  # e.g. "paired bootstrap over 872 dev examples and seeds (3 vs 3), 2000 draws"
    draws: np.ndarray | None = field(default=None, repr=False)  # bootstrap replicates

    def short(self, scale: float = 100, decimals: int = 2) -> str:
        """"+0.42 [-0.31, +1.10]"; the estimate alone without an interval; "—" without either."""
        def number(x):
            return f"{x * scale:+.{decimals}f}"
        if math.isnan(self.estimate):
            return "—"
        if math.isnan(self.low) or math.isinf(self.low):
            return number(self.estimate)
        return f"{number(self.estimate)} [{number(self.low)}, {number(self.high)}]"

    def text(self, scale: float = 100, unit: str = " points", decimals: int = 2) -> str:
        """"+0.42 [-0.31, +1.10] points (95%, paired bootstrap ...)"."""
        if math.isnan(self.low) or math.isinf(self.low):
            return f"{self.short(scale, decimals)}{unit}, no 95% interval ({self.method})"
        return f"{self.short(scale, decimals)}{unit} (95%, {self.method})"


def t_quantile(df: float) -> float:
    """The 97.5% quantile of Student's t with df degrees of freedom (rounded down)."""
    return T975[min(max(int(df), 1), len(T975)) - 1]


def seed_interval(a: dict, b: dict | float, note: str = "") -> Interval:
    """The mean difference over seeds of arm A ({seed: value}) and arm B ({seed: value}, or a
    constant) with its 95% Student-t interval: paired on the seeds both ran when there are at
    least two, else Welch's; fewer than two values on a side gives no interval (nan)."""
    va = np.array(list(a.values()), dtype=float)
    if not isinstance(b, dict):
        return _t_interval(va - float(b), f"one-sample t over seeds, n={len(va)}", note)
    common = sorted(set(a) & set(b))
    if len(common) >= 2 and len(common) == len(a) == len(b):
        diffs = np.array([a[s] - b[s] for s in common], dtype=float)
        return _t_interval(diffs, f"paired t over seeds, n={len(diffs)}", note)
    vb = np.array(list(b.values()), dtype=float)
    estimate = va.mean() - vb.mean()
    method = f"Welch t over seeds, n={len(va)} vs {len(vb)}"
    if len(va) < 2 or len(vb) < 2:
        return Interval(estimate, math.nan, math.nan, _join(method, note))
    sa, sb = va.var(ddof=1) / len(va), vb.var(ddof=1) / len(vb)
    se = math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa**2 / (len(va) - 1) + sb**2 / (len(vb) - 1)) if se > 0 else len(va) + len(vb) - 2
    half = t_quantile(df) * se
    return Interval(estimate, estimate - half, estimate + half, _join(method, note))


def _t_interval(diffs: np.ndarray, method: str, note: str) -> Interval:
    estimate = float(diffs.mean())
    if len(diffs) < 2:
        return Interval(estimate, math.nan, math.nan, _join(method, note))
    half = t_quantile(len(diffs) - 1) * float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    return Interval(estimate, estimate - half, estimate + half, _join(method, note))


def _join(method: str, note: str) -> str:
    return f"{method}; {note}" if note else method


def weighted_scores(metric: str, prediction, label, weights) -> np.ndarray:
    """The metric of one run on resampled dev sets: weights (draws x n) counts how often each
    example was drawn; one score per draw. With weights of ones it equals
    lora_repro.metrics.glue (an undefined correlation, e.g. of a constant prediction, counts 0)."""
    p, y = np.asarray(prediction), np.asarray(label)
    W = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    n = W.sum(axis=1)
    if metric == "mean":  # any per-unit value (e.g. intruders per matrix); label names the units
        return W @ p.astype(np.float64) / n
    if metric == "accuracy":
        return W @ (p == y) / n
    if metric == "bleu":  # p: bleu_statistics (one row per input); y: the inputs
        return bleu_from_statistics(W @ p.astype(np.float64))
    if metric == "f1":
        true_positive = W @ ((p == 1) & (y == 1))
        return _ratio(2 * true_positive, 2 * true_positive + W @ (p != y))
    if metric == "matthews_correlation":
        classes = np.union1d(p, y)
        true_counts = W @ (y[:, None] == classes)
        predicted_counts = W @ (p[:, None] == classes)
        numerator = (W @ (p == y)) * n - (true_counts * predicted_counts).sum(axis=1)
        denominator = np.sqrt(np.clip(n**2 - (predicted_counts**2).sum(axis=1), 0, None)
                              * np.clip(n**2 - (true_counts**2).sum(axis=1), 0, None))
        return _ratio(numerator, denominator)
    if metric == "pearson":
        x, z = p.astype(np.float64) - p.mean(), y.astype(np.float64) - y.mean()
        mx, mz = W @ x / n, W @ z / n
        cov = W @ (x * z) / n - mx * mz
        vx = np.clip(W @ (x * x) / n - mx**2, 0, None)
        vz = np.clip(W @ (z * z) / n - mz**2, 0, None)
        return _ratio(cov, np.sqrt(vx * vz))
    raise ValueError(f"no bootstrap for metric {metric!r}: valid metrics are {', '.join(BOOTSTRAP_METRICS)}")


def _ratio(numerator, denominator) -> np.ndarray:
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 1e-12, denominator, 1.0)
    return np.where(denominator > 1e-12, numerator / safe, 0.0)


def constant_prediction(label, metric: str) -> np.ndarray:
    """The constant baseline's predictions: the majority dev label (the smallest on a tie) for a
    classification, the mean label for a regression (Pearson of a constant: 0)."""
    y = np.asarray(label)
    if metric == "pearson":
        return np.full(len(y), float(y.mean()))
    values, counts = np.unique(y, return_counts=True)
    return np.full(len(y), values[counts.argmax()])


def paired_bootstrap(a: list, b: list, metric: str, draws: int = DRAWS, seed: int = SEED,
                     units: str = "dev examples", runs: str = "seeds") -> Interval:
    """The 95% percentile interval of mean_seeds metric(A) - mean_seeds metric(B) on the same
    dev examples. a, b: one (prediction, label) pair per seed of each arm; every label array
    must be the same (the same dev set in the same order). `units` and `runs` name what is
    resampled in the printed method (e.g. "matrices" and "runs" for per-matrix measures)."""
    if not a or not b:
        raise ValueError("each arm needs at least one run with predictions")
    label = np.asarray(a[0][1])
    for prediction, other in list(a) + list(b):
        if len(prediction) != len(label) or not np.array_equal(np.asarray(other), label):
            raise ValueError("the arms were scored on different dev examples (labels differ)")
    n = len(label)
    full = np.ones((1, n))
    estimate = (np.mean([weighted_scores(metric, p, y, full)[0] for p, y in a])
                - np.mean([weighted_scores(metric, p, y, full)[0] for p, y in b]))
    rng = np.random.default_rng(seed)
    scores_a, scores_b = np.empty((len(a), draws)), np.empty((len(b), draws))
    for start in range(0, draws, CHUNK):
        size = min(CHUNK, draws - start)
        W = rng.multinomial(n, np.full(n, 1.0 / n), size=size)  # the same examples for both arms
        for scores, arm in ((scores_a, a), (scores_b, b)):
            for i, (prediction, y) in enumerate(arm):
                scores[i, start:start + size] = weighted_scores(metric, prediction, y, W)
    columns = np.arange(draws)
    pick_a = rng.integers(0, len(a), size=(len(a), draws))  # each arm's seeds, with replacement
    pick_b = rng.integers(0, len(b), size=(len(b), draws))
    replicates = scores_a[pick_a, columns].mean(axis=0) - scores_b[pick_b, columns].mean(axis=0)
    low, high = np.quantile(replicates, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    method = f"paired bootstrap over {n} {units} and {runs} ({len(a)} vs {len(b)}), {draws} draws"
    return Interval(float(estimate), float(low), float(high), method, replicates)


def average(intervals: list[Interval]) -> Interval | None:
    """The mean of several differences (e.g. over GLUE tasks) from their bootstrap replicates,
    draw by draw; None unless every one has replicates of the same length."""
    if not intervals or any(i.draws is None for i in intervals):
        return None
    if len({len(i.draws) for i in intervals}) != 1:
        return None
    replicates = np.mean([i.draws for i in intervals], axis=0)
    low, high = np.quantile(replicates, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Interval(float(np.mean([i.estimate for i in intervals])), float(low), float(high),
                    f"mean over {len(intervals)} paired bootstraps, draw by draw", replicates)


# -- the rules -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """How a verdict follows from the interval of a difference: kind "equivalent" (on par),
    "non_inferior" (on par or better) or "beats" (A beats B); margin in the statistic's units."""

    kind: str
    margin: float = 0.0

    def decide(self, interval: Interval | None) -> str:
        if interval is None:
            return NOT_RUN
        low, high, m = interval.low, interval.high, self.margin
        if math.isnan(low) or math.isnan(high):
            return INCONCLUSIVE
        if self.kind == "equivalent":
            if -m <= low and high <= m:
                return CONSISTENT
            return CONTRADICTED if high < -m or low > m else INCONCLUSIVE
        if self.kind == "non_inferior":
            if low >= -m:
                return CONSISTENT
            return CONTRADICTED if high < -m else INCONCLUSIVE
        if self.kind == "beats":
            if low > 0:
                return CONSISTENT
            return CONTRADICTED if high <= 0 else INCONCLUSIVE
        raise ValueError(f"unknown rule kind {self.kind!r}: valid kinds are equivalent, "
                         "non_inferior, beats")

    def describe(self, scale: float = 100, unit: str = " points", what: str = "A − B") -> str:
        """The rule in words, as the report prints it."""
        m = f"{self.margin * scale:g}{' point' if unit == ' points' and self.margin * scale == 1 else unit}"
        if self.kind == "equivalent":
            return (f"on par: consistent if the whole 95% interval of {what} lies inside ±{m}; "
                    f"contradicted if it lies wholly outside ±{m}; inconclusive otherwise")
        if self.kind == "non_inferior":
            return (f"on par or better (margin {m}): consistent if the 95% interval of {what} has "
                    f"its lower end ≥ −{m}; contradicted if its upper end < −{m}; inconclusive "
                    "otherwise")
        return (f"beats: consistent if the 95% interval of {what} lies above 0; contradicted if its "
                "upper end ≤ 0; inconclusive otherwise")


NON_INFERIOR_1PT = Rule("non_inferior", 0.01)  # metrics are fractions: 0.01 = 1 point
EQUIVALENT_1PT = Rule("equivalent", 0.01)
BEATS = Rule("beats")
STATISTIC = ("The statistic: a paired bootstrap over dev examples and seeds (each draw resamples "
             f"the dev examples, the same indices for both arms, and each arm's seeds; {DRAWS} "
             "draws; 2.5% and 97.5% percentiles) when every run kept its per-example "
             "predictions; otherwise the mean difference over seeds with its Student-t interval "
             "(paired on common seeds, else Welch), n shown, and said so.")


def metric_of(task: str) -> str:
    """The metric a task's verdicts compare: GLUE's primary metric, BLEU for NLG."""
    return PRIMARY_METRIC.get(task, "bleu")


def tier_verdict(verdict: str, tier: str | None) -> str:
    """`reproduced` for a consistent result at the paper tier; the verdict itself otherwise."""
    return REPRODUCED if verdict == CONSISTENT and tier == "paper" else verdict


def combine(verdicts) -> str:
    """One verdict for several parts that must all hold: contradicted if any part is, consistent
    (or reproduced) only if all are, not run if none ran, inconclusive otherwise."""
    verdicts = list(verdicts)
    ran = [v for v in verdicts if v != NOT_RUN]
    if not ran:
        return NOT_RUN
    if CONTRADICTED in ran:
        return CONTRADICTED
    if set(ran) == {REPRODUCED}:
        return REPRODUCED
    if set(ran) <= {CONSISTENT, REPRODUCED} and len(ran) == len(verdicts):
        return CONSISTENT
    return INCONCLUSIVE


# -- arms of runs --------------------------------------------------------------------------------

@dataclass
class Arm:
    """The finished runs of one cell: each seed's metric value and, where kept, its per-example
    dev predictions (prediction, label) on the task's first dev split."""

    values: dict = field(default_factory=dict)  # seed -> metric value (a fraction)
    predictions: dict = field(default_factory=dict)  # seed -> (prediction, label)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def complete(self) -> bool:
        """Every seed kept its predictions."""
        return bool(self.values) and set(self.predictions) == set(self.values)


def arm_text(arm: Arm, scale: float = 100, decimals: int = 1) -> str:
    """"84.3 ± 0.4 (n=3)": an arm's mean ± sample std over its seeds; "not run" without runs."""
    if not arm.n:
        return "not run"
    values = np.array(list(arm.values.values())) * scale
    spread = f" ± {values.std(ddof=1):.{decimals}f}" if arm.n > 1 else ""
    return f"{values.mean():.{decimals}f}{spread} (n={arm.n})"


def arm_of(rows, metric: str = "primary", split: str | None = None) -> Arm:
    """An Arm from runs_frame rows of one cell (done runs only; one value per seed, the first
    run of a seed if a copy repeats it). Predictions come from each run's predictions.json."""
    arm = Arm()
    for _, row in rows.iterrows():
        if row.get("status") != "done" or metric not in row or _missing(row[metric]):
            continue
        seed = row["seed"]
        if seed in arm.values:
            continue
        arm.values[seed] = float(row[metric])
        kept = per_example(row["run_dir"], metric, split) if isinstance(row.get("run_dir"), str) else None
        if kept is not None:
            arm.predictions[seed] = kept
    return arm


def per_example(run_dir: str, metric: str, split: str | None = None) -> tuple | None:
    """What the paired bootstrap resamples of one run, as (prediction, label): a GLUE run's dev
    predictions and labels (the split asked for, else the first); for BLEU, an NLG run's
    per-input BLEU statistics and its inputs. None when the run kept neither."""
    if metric == "bleu":
        kept = read_generations(run_dir)
        if not kept or not kept.get("items"):
            return None
        items = kept["items"]
        return (bleu_statistics([item["output"] for item in items], [item["references"] for item in items]),
                np.asarray([item["source"] for item in items]))
    kept = read_predictions(run_dir)
    splits = (kept or {}).get("splits") or {}
    name = split if split in splits else next(iter(splits), None)
    if name is None:
        return None
    return np.asarray(splits[name]["prediction"]), np.asarray(splits[name]["label"])


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def compare(a: Arm, b: Arm, metric: str, draws: int = DRAWS) -> Interval | None:
    """A - B: the paired bootstrap when both arms kept every run's predictions on the same dev
    examples and the metric has a bootstrap; else the seed-level interval, saying why. None when
    an arm has no finished run."""
    if not a.n or not b.n:
        return None
    if a.complete and b.complete and metric in BOOTSTRAP_METRICS:
        try:
            return paired_bootstrap(list(a.predictions.values()), list(b.predictions.values()),
                                    metric, draws)
        except ValueError as err:
            return seed_interval(a.values, b.values, f"seed level: {err}")
    why = ("seed level: per-example predictions missing (older records)"
           if metric in BOOTSTRAP_METRICS else f"seed level: {metric} has no bootstrap here")
    return seed_interval(a.values, b.values, why)


def against_baseline(a: Arm, metric: str, draws: int = DRAWS) -> Interval | None:
    """A - the constant predictor on the same dev examples (majority class; mean for a
    regression). Without predictions the baseline is known only where it is 0 (Matthews,
    Pearson); otherwise there is no interval, and the verdict is inconclusive."""
    if not a.n:
        return None
    if metric not in CONSTANT_PREDICTOR_METRICS:
        raise ValueError(f"no constant predictor for {metric!r}: valid metrics are "
                         f"{', '.join(CONSTANT_PREDICTOR_METRICS)}")
    if a.complete:
        label = next(iter(a.predictions.values()))[1]
        constant = (constant_prediction(label, metric), label)
        try:
            return paired_bootstrap(list(a.predictions.values()), [constant], metric, draws)
        except ValueError as err:
            return Interval(math.nan, math.nan, math.nan, f"no baseline: {err}")
    if metric in ("matthews_correlation", "pearson"):
        return seed_interval(a.values, 0.0, "seed level: per-example predictions missing (older "
                                            "records); a constant predictor scores 0")
    return Interval(math.nan, math.nan, math.nan,
                    "no per-example predictions (older records): the majority rate is unknown")


# -- claims and their findings -------------------------------------------------------------------

@dataclass
class Finding:
    """One setting's evidence for a claim: our numbers, the statistic and the verdict."""

    setting: str
    ours: str
    verdict: str
    statistic: str = ""


@dataclass
class Claim:
    statement: str
    paper: str  # the evidence of the paper (or the follow-up), in numbers
    rule: str  # how the verdict is decided, in words (the code: this module)
    findings: list[Finding] = field(default_factory=list)
    absent: str = "no finished runs yet"  # what "not run" means when nothing was found
    source: str = ""  # a follow-up's paper
    figures: list = field(default_factory=list)  # paths drawn for it

    @property
    def verdict(self) -> str:
        """The one verdict of every setting, or each setting's verdict when they differ."""
        verdicts = {f.verdict for f in self.findings}
        if not self.findings or verdicts == {NOT_RUN}:
            return NOT_RUN
        if len(verdicts) == 1:
            return verdicts.pop()
        return "; ".join(f"{f.verdict} ({f.setting})" for f in self.findings)
