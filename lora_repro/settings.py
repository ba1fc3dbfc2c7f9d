"""The one typed home of every run setting: a dataclass per config group, each field with what it
means and what is valid, registered with Hydra as the schema of conf/<group>/*.yaml.

    python -c "from lora_repro.settings import describe; print(describe('train'))"

A method's fields live in its own module (lora_repro/methods/), registered the same way. The
tier tables (conf/hparams/) may set any train or method field and `init_from`; `validate` checks
a fully resolved run once, before anything is built or recorded, and raises a one-line
ValueError naming the field, the value and what is valid.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Optional


@dataclass(frozen=True)
class Valid:
    """What a field accepts, in words (for the error) and as a test."""

    words: str
    test: Callable[[Any], bool]

    def check(self, value) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError, AttributeError):
            return False


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


POSITIVE_INT = Valid("a positive integer", lambda v: type(v) is int and v >= 1)
NONNEGATIVE_INT = Valid("an integer >= 0", lambda v: type(v) is int and v >= 0)
POSITIVE = Valid("a number > 0", lambda v: _number(v) and v > 0)
NONNEGATIVE = Valid("a number >= 0", lambda v: _number(v) and v >= 0)
FRACTION = Valid("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
ANY = Valid("any value", lambda v: True)


def one_of(*choices) -> Valid:
    return Valid(f"one of {', '.join(map(str, choices))}", lambda v: v in choices)


def setting(default, help: str, valid: Valid = ANY):
    """A dataclass field with its meaning and its valid values (None always means 'not set')."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": help, "valid": valid})
    return field(default=default, metadata={"help": help, "valid": valid})


@dataclass
class ModelConfig:
    name: str = setting(MISSING, "a project model (lora_repro/known_models.json, conf/model/)")
    path: Optional[str] = setting(None, "a local folder with the weights (wins over the name's source)")


@dataclass
class TaskConfig:
    name: str = setting(MISSING, "a GLUE or NLG task (conf/task/)")
    kind: Optional[str] = setting(None, "glue | nlg (checked against the task)", one_of("glue", "nlg"))
    data_dir: Optional[str] = setting(None, "a local data folder (GLUE_DIR, E2E_DIR, WEBNLG_DIR); null: the hub")
    tokenizer_dir: Optional[str] = setting(None, "a tokenizer folder (GPT-2's vocab.json + merges.txt)")


@dataclass
class TrainConfig:
    """How a run trains and evaluates; nulls come from the tier's table, then these defaults."""

    lr: Optional[float] = setting(None, "peak learning rate", POSITIVE)
    batch_size: Optional[int] = setting(None, "training examples per optimizer step", POSITIVE_INT)
    eval_batch_size: Optional[int] = setting(None, "examples per evaluation batch (null: batch_size)",
                                             POSITIVE_INT)
    epochs: Optional[int] = setting(None, "training epochs", POSITIVE_INT)
    max_steps: Optional[int] = setting(None, "stop after this many optimizer steps (sets the schedule's length)",
                                       POSITIVE_INT)
    warmup_ratio: Optional[float] = setting(None, "linear warmup over this fraction of the steps", FRACTION)
    warmup_steps: Optional[int] = setting(None, "linear warmup over this many steps (wins over warmup_ratio)",
                                          NONNEGATIVE_INT)
    weight_decay: Optional[float] = setting(None, "AdamW decoupled weight decay", NONNEGATIVE)
    lr_schedule: Optional[str] = setting(None, "linear (decay to 0 after warmup) | constant",
                                         one_of("linear", "constant"))
    optimizer: Optional[str] = setting(None, "adamw", one_of("adamw"))
    max_seq_length: Optional[int] = setting(None, "tokens per example (longer ones are truncated)", POSITIVE_INT)
    label_smoothing: Optional[float] = setting(None, "label smoothing of the token-level loss (NLG)", FRACTION)
    classifier_dropout: Optional[float] = setting(None, "dropout before the classification head", FRACTION)
    grad_accum: Optional[int] = setting(None, "batches accumulated per optimizer step", POSITIVE_INT)
    precision: Optional[str] = setting(None, "fp32 | bf16 | fp16 (autocast)", one_of("fp32", "bf16", "fp16"))
    train_limit: Optional[int] = setting(None, "use the first N training rows (null: all)", POSITIVE_INT)
    eval_limit: Optional[int] = setting(None, "evaluate on the first N rows of each eval split (null: all)",
                                        POSITIVE_INT)
    beam_size: Optional[int] = setting(None, "beam search width (NLG)", POSITIVE_INT)
    length_penalty: Optional[float] = setting(None, "beam search length penalty (NLG)", NONNEGATIVE)
    no_repeat_ngram_size: Optional[int] = setting(None, "forbid repeated n-grams of this size (NLG; 0: off)",
                                                  NONNEGATIVE_INT)
    max_new_tokens: Optional[int] = setting(None, "most tokens generated per example (NLG)", POSITIVE_INT)
    # How the run executes; none of these changes its result, so none enters the run_id.
    num_threads: Optional[int] = setting(None, "CPU threads (null: all cores)", POSITIVE_INT)
    checkpoint_every: int = setting(50, "optimizer steps between resumable checkpoints", POSITIVE_INT)
    progress: bool = setting(True, "show progress bars", one_of(True, False))


# train fields that say how a run executes, not what it computes: kept out of the run_id
EXECUTION_FIELDS = ("num_threads", "checkpoint_every", "progress")
# what a train field is when neither the command line nor the tier's table sets it
TRAIN_DEFAULTS = {"grad_accum": 1, "precision": "fp32", "warmup_ratio": 0.0, "warmup_steps": 0,
                  "weight_decay": 0.0, "lr_schedule": "linear", "optimizer": "adamw", "max_seq_length": 128,
                  "label_smoothing": 0.0, "beam_size": 1, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
                  "max_new_tokens": 64}
REQUIRED_TRAIN = ("lr", "batch_size", "epochs")


@dataclass
class LoggerConfig:
    name: str = setting("none", "wandb | none", one_of("wandb", "none"))
    project: Optional[str] = setting(None, "W&B project")
    entity: Optional[str] = setting(None, "W&B entity (team or user)")
    mode: Optional[str] = setting(None, "W&B mode: offline | online | disabled",
                                  one_of("offline", "online", "disabled", None))


@dataclass
class RunConfig:
    """The top level of conf/config.yaml (the groups are composed in by Hydra)."""

    model: ModelConfig = MISSING
    task: TaskConfig = MISSING
    method: Any = MISSING  # each method has its own schema (conf/method/<name>.yaml extends it)
    train: TrainConfig = MISSING
    logger: LoggerConfig = MISSING
    tier: str = setting("quick", "quick (this CPU in minutes) | paper (the paper's models and settings)")
    preset: Optional[str] = setting(None, "a preset over the tier, e.g. authors_scripts")
    experiment_name: str = setting("default", "records land in <run_root>/<experiment_name>/<run_id>/")
    seed: int = setting(0, "the run's seed (data order, initialisation)", NONNEGATIVE_INT)
    run_root: str = setting("results/runs", "where records are written")
    init_from: Optional[str] = setting(
        None, "start from another run: a task name (its finished run of the same model, method and "
        "seed in this experiment) or a run folder / adapter file")
    force: bool = setting(False, "run again even if a finished record exists", one_of(True, False))


GROUPS = {"model": ModelConfig, "task": TaskConfig, "train": TrainConfig, "logger": LoggerConfig}


def fields_of(schema: type) -> dict:
    return {f.name: f for f in fields(schema)}


def field_help(schema: type) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in fields(schema)}


def describe(group: str) -> str:
    """Every field of a group (or `method/<name>`) with what it means and what is valid."""
    schema = method_schema(group.split("/", 1)[1]) if group.startswith("method/") else GROUPS[group]
    return "\n".join(f"{f.name}: {f.metadata.get('help', '')} ({f.metadata.get('valid', ANY).words})"
                     for f in fields(schema))


def method_schema(name: str) -> type:
    from lora_repro import methods

    return methods.get(name).config


def check_fields(values: dict, schema: type, where: str) -> None:
    """Raise one line for the first unknown field or invalid value of `values` under `schema`."""
    known = {f.name: f for f in fields(schema)}
    prefix = f"{where}." if where else ""
    for key, value in values.items():
        if key not in known:
            raise ValueError(f"{prefix}{key} is not a setting: valid ones are {', '.join(known)}")
        valid = known[key].metadata.get("valid", ANY)
        if value is not None and not valid.check(value):
            hint = ""
            if isinstance(value, str) and _parses_as_float(value):
                hint = " (in YAML write floats as 5.0e-4: 5e-4 reads as a string)"
            raise ValueError(f"{prefix}{key}={value!r} is not valid: {valid.words} "
                             f"({known[key].metadata.get('help', '')}){hint}")


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def table_fields(method: str) -> dict[str, str]:
    """The fields a tier table may set for a method: train fields, the method's fields, init_from."""
    names = {**field_help(TrainConfig), **field_help(method_schema(method))}
    names.pop("name", None)
    for name in EXECUTION_FIELDS:
        names.pop(name, None)
    names["init_from"] = field_help(RunConfig)["init_from"]
    return names


def as_dict(cfg) -> dict:
    if is_dataclass(cfg):
        return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    return dict(cfg)


_REGISTERED = False


def register_configs() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent): conf/<group>/*.yaml extend them."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore

    from lora_repro import methods

    store = ConfigStore.instance()
    store.store(name="config_schema", node=RunConfig, provider="lora_repro")
    for name in methods.names():
        store.store(group="method", name=f"{name}_schema", node=methods.get(name).config, provider="lora_repro")
    _REGISTERED = True
