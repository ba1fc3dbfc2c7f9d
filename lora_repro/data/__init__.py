"""Datasets: GLUE for the encoders, E2E / WebNLG / DART for GPT-2; the hub or local files."""

from lora_repro.data.glue import (
    GLUE_TASKS,
    glue_task,
    load_glue,
    tokenize_glue,
)
from lora_repro.data.nlg import (
    IGNORE_INDEX,
    NLG_TASKS,
    encode_pair,
    encode_prompt,
    group_references,
    load_gpt2_tokenizer,
    load_nlg,
    nlg_task,
    tokenize_nlg,
)

__all__ = [
    "GLUE_TASKS",
    "IGNORE_INDEX",
    "NLG_TASKS",
    "encode_pair",
    "encode_prompt",
    "glue_task",
    "group_references",
    "load_glue",
    "load_gpt2_tokenizer",
    "load_nlg",
    "nlg_task",
    "tokenize_glue",
    "tokenize_nlg",
]
