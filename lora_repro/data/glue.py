"""GLUE: one spec per task, loading from the hub or a classic `glue_data/` folder, tokenization.

    from lora_repro.data.glue import load_glue
    train = load_glue("sst2", "train", data_dir="../shared/data/glue", limit=8000)

Every split comes back as a `datasets.Dataset` with the same columns whatever the source:
`text_a`, `text_b` (pair tasks only), `label` (int class id; float score for stsb) and `idx`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets

HUB_PATH = "nyu-mll/glue"  # the canonical home of the hub's "glue" dataset
GLUE_DIR_ENV = "GLUE_DIR"


@dataclass(frozen=True)
class TsvLayout:
    """Where a task's fields sit in the classic GLUE TSV files."""

    text_columns: tuple[str, ...]
    label_column: str
    header: tuple[str, ...] | None = None  # column names for files that have no header row
    files: dict[str, str] = field(
        default_factory=lambda: {"train": "train.tsv", "validation": "dev.tsv"}
    )


@dataclass(frozen=True)
class GlueTask:
    name: str  # the hub config name, also the project's task name
    folder: str  # the classic glue_data/<folder>
    hub_text_columns: tuple[str, ...]  # one column: single-sentence task; two: a pair
    label_names: tuple[str, ...]  # empty for regression (stsb)
    metrics: tuple[str, ...]  # as the paper reports them, primary first
    tsv: TsvLayout
    eval_splits: tuple[str, ...] = ("validation",)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.hub_text_columns) == 2

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.tsv.files)


_RTE_LIKE = TsvLayout(("sentence1", "sentence2"), "label")
_MNLI_FILES = {
    "train": "train.tsv",
    "validation": "dev_matched.tsv",  # "validation" alone means matched, as the paper's headline
    "validation_matched": "dev_matched.tsv",
    "validation_mismatched": "dev_mismatched.tsv",
}

# fmt: off
GLUE_TASKS: dict[str, GlueTask] = {
    task.name: task
    for task in [
        GlueTask(
            "mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            TsvLayout(("sentence1", "sentence2"), "gold_label", files=_MNLI_FILES),
            eval_splits=("validation_matched", "validation_mismatched"),
        ),
        GlueTask(
            "sst2", "SST-2", ("sentence",), ("negative", "positive"), ("accuracy",),
            TsvLayout(("sentence",), "label"),
        ),
        GlueTask(
            "mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
            ("accuracy", "f1"),
            TsvLayout(("#1 String", "#2 String"), "Quality"),
        ),
        GlueTask(
            "cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            TsvLayout(("sentence",), "label",
                      header=("source", "label", "original_label", "sentence")),
        ),
        GlueTask(
            "qnli", "QNLI", ("question", "sentence"), ("entailment", "not_entailment"),
            ("accuracy",),
            TsvLayout(("question", "sentence"), "label"),
        ),
        GlueTask(
            "qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
            ("accuracy", "f1"),
            TsvLayout(("question1", "question2"), "is_duplicate"),
        ),
        GlueTask(
            "rte", "RTE", ("sentence1", "sentence2"), ("entailment", "not_entailment"),
            ("accuracy",),
            _RTE_LIKE,
        ),
        GlueTask(
            "stsb", "STS-B", ("sentence1", "sentence2"), (), ("pearson", "spearman"),
            TsvLayout(("sentence1", "sentence2"), "score"),
        ),
        GlueTask(
            "wnli", "WNLI", ("sentence1", "sentence2"), ("not_entailment", "entailment"),
            ("accuracy",),
            _RTE_LIKE,
        ),
    ]
}
# fmt: on


def glue_task(name: str) -> GlueTask:
    if name not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {name!r}: choose one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def load_glue(
    task: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> datasets.Dataset:
    """One GLUE split with columns text_a, [text_b], label, idx; `limit` keeps the first rows.

    data_dir is a classic `glue_data/` folder (default: $GLUE_DIR); without one, the hub.
    """
    spec = glue_task(task)
    if split not in spec.splits:
        raise ValueError(
            f"unknown split {split!r} for {task}: choose one of {', '.join(spec.splits)}"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of rows, got {limit}")
    data_dir = data_dir if data_dir is not None else os.environ.get(GLUE_DIR_ENV)
    if data_dir is not None:
        return _from_tsv(spec, Path(data_dir) / spec.folder / spec.tsv.files[split], limit)
    return _from_hub(spec, split, limit)


def _features(spec: GlueTask) -> datasets.Features:
    label = (
        datasets.Value("float32")
        if spec.is_regression
        else datasets.ClassLabel(names=list(spec.label_names))
    )
    texts = {
        column: datasets.Value("string")
        for column in ("text_a", "text_b")[: len(spec.hub_text_columns)]
    }
    return datasets.Features({**texts, "label": label, "idx": datasets.Value("int32")})


def _from_hub(spec: GlueTask, split: str, limit: int | None) -> datasets.Dataset:
    hub_split = "validation_matched" if (spec.name, split) == ("mnli", "validation") else split
    if limit is not None:
        hub_split = f"{hub_split}[:{limit}]"
    try:
        dataset = datasets.load_dataset(HUB_PATH, spec.name, split=hub_split)
    except ConnectionError as err:
        raise ConnectionError(
            f"cannot load GLUE {spec.name} from the hub ({HUB_PATH}): the hub is unreachable "
            f"or offline (HF_DATASETS_OFFLINE={os.environ.get('HF_DATASETS_OFFLINE', '')!r}). "
            f"Point {GLUE_DIR_ENV} or data_dir at a classic glue_data/ folder holding "
            f"{spec.folder}/ instead."
        ) from err
    renames = dict(zip(spec.hub_text_columns, ("text_a", "text_b")))
    return dataset.rename_columns(renames).cast(_features(spec))


def _from_tsv(spec: GlueTask, path: Path, limit: int | None) -> datasets.Dataset:
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE {spec.name} file not found: {path}. Point {GLUE_DIR_ENV} or data_dir at a "
            f"classic glue_data/ folder with {spec.folder}/{path.name} in it, or unset both to "
            "use the hub."
        )
    layout = spec.tsv
    columns = {"text_a": [], "text_b": [], "label": []}
    # csv, not pandas: pandas pads short rows silently, and a bad row must be named by its line.
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = layout.header or next(rows, None)
        if header is None:
            raise ValueError(f"{path}: the file is empty")
        header = list(header)
        missing = [c for c in (*layout.text_columns, layout.label_column) if c not in header]
        if missing:
            raise ValueError(f"{path}: header {header} lacks column(s) {missing}")
        text_at = [header.index(c) for c in layout.text_columns]
        label_at = header.index(layout.label_column)
        for row in rows:
            if limit is not None and len(columns["label"]) == limit:
                break
            where = f"{path}, line {rows.line_num}"
            if len(row) != len(header):
                raise ValueError(
                    f"{where}: expected {len(header)} tab-separated fields, found {len(row)}"
                )
            for name, at in zip(("text_a", "text_b"), text_at):
                columns[name].append(row[at])
            columns["label"].append(_parse_label(spec, row[label_at], where))
    if not spec.is_pair:
        del columns["text_b"]
    columns["idx"] = list(range(len(columns["label"])))
    return datasets.Dataset.from_dict(columns, features=_features(spec))


def _parse_label(spec: GlueTask, value: str, where: str) -> int | float:
    if spec.is_regression:
        try:
            score = float(value)
        except ValueError:
            score = float("nan")
        if not 0.0 <= score <= 5.0:
            raise ValueError(f"{where}: similarity score {value!r} is not a number in [0, 5]")
        return score
    if value in spec.label_names:
        return spec.label_names.index(value)
    if value.isdigit() and int(value) < spec.num_labels:
        return int(value)
    choices = list(spec.label_names) + [str(i) for i in range(spec.num_labels)]
    raise ValueError(f"{where}: label {value!r} is not one of {choices}")


def tokenize_glue(dataset: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """input_ids, attention_mask (token_type_ids where the tokenizer makes them) and labels.

    Truncated to max_length and left unpadded: a collator pads each batch to its own longest row.
    """
    pair = "text_b" in dataset.column_names

    def encode(batch):
        texts = (batch["text_a"], batch["text_b"]) if pair else (batch["text_a"],)
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        return {**encoded, "labels": batch["label"]}

    encoded = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    return encoded.cast_column("labels", dataset.features["label"])

