"""NLG data for a causal LM: E2E, WebNLG 2017 and DART as (source, reference) pairs; their encoding.

    pairs = load_nlg("e2e", "train", data_dir="../shared/data/e2e")  # source, reference
    items = group_references(load_nlg("e2e", "validation"))        # source, references
    train = tokenize_nlg(pairs, load_gpt2_tokenizer("../shared/data/tokenizers/gpt2"), 512)

Sources are linearized as the LoRA authors' code does (microsoft/LoRA, examples/NLG/src):
    E2E     name : The Eagle | Type : coffee shop | customer rating : 5 out of 5
    WebNLG  Aarhus_Airport : cityServed : Aarhus | Aarhus : leaderName : Jacob_Bundsgaard
    DART    as WebNLG, with each relation lowercased
and the model reads `source <eos> " " reference <eos>` (their gpt2_encode.py): the first eos
separates, the loss covers the reference and the final eos only (their data_utils.py mask). The
same layout serves any tokenizer (SmolLM2's eos is <|im_end|>; no chat template), preceded by the
special tokens the tokenizer itself puts before a text (a Llama-2/3 bos; none for GPT-2, SmolLM2).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and every HF LM head) skips


@dataclass(frozen=True)
class NLGTask:
    name: str
    hub_path: str | None  # None: local files only
    splits: tuple[str, ...]
    env_var: str | None = None  # the local folder's environment variable; None: hub only
    # the split decoded and scored at the end of a run (the per-epoch loss uses "validation")
    eval_split: str = "validation"
    # how a limit picks rows: False, the first N in file order; True, N spread evenly through it
    spread_limit: bool = False


NLG_TASKS: dict[str, NLGTask] = {
    task.name: task
    for task in [
        # tuetschek/e2e_nlg is the original release (GEM/e2e_nlg is the *cleaned* E2E).
        NLGTask("e2e", "tuetschek/e2e_nlg", ("train", "validation", "test"), "E2E_DIR"),
        # The hub's web_nlg is a loading script, and its test split is composed differently.
        # Scored on the test set (Table 14's seen / unseen / all needs its unseen categories);
        # the release is sorted by size and category, so a limit takes rows spread through it.
        NLGTask(
            "webnlg",
            None,
            ("train", "validation", "test", "test_seen", "test_unseen"),
            "WEBNLG_DIR",
            eval_split="test",
            spread_limit=True,
        ),
        NLGTask("dart", "Yale-LILY/dart", ("train", "validation", "test")),
    ]
}

E2E_FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
# The authors' MR text names three slots differently from the release's MR keys.
E2E_SLOTS = {
    "name": "name",
    "eatType": "Type",
    "food": "food",
    "priceRange": "price",
    "customer rating": "customer rating",
    "area": "area",
    "familyFriendly": "family friendly",
    "near": "near",
}
_E2E_ATTRIBUTE = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*(?:,|$)")

# The ten DBpedia categories of WebNLG 2017's training data; the test set adds five unseen ones.
WEBNLG_SEEN_CATEGORIES = (
    "Airport", "Astronaut", "Building", "City", "ComicsCharacter",
    "Food", "Monument", "SportsTeam", "University", "WrittenWork",
)  # fmt: skip


def nlg_task(name: str) -> NLGTask:
    if name not in NLG_TASKS:
        raise ValueError(f"unknown NLG task {name!r}: choose one of {', '.join(NLG_TASKS)}")
    return NLG_TASKS[name]


def load_nlg(
    task: str, split: str, data_dir: str | os.PathLike | None = None, limit: int | None = None
) -> datasets.Dataset:
    """One row per (source, reference) pair, in file order; WebNLG adds category and seen.

    data_dir: the E2E release folder (default $E2E_DIR) or the WebNLG 2017 XML folder (default
    $WEBNLG_DIR); without one, the hub. `limit` keeps N pairs (see `take`).
    """
    spec = nlg_task(task)
    if split not in spec.splits:
        raise ValueError(
            f"unknown split {split!r} for {task}: choose one of {', '.join(spec.splits)}"
        )
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of pairs, got {limit}")
    if data_dir is None and spec.env_var:
        data_dir = os.environ.get(spec.env_var)
    if data_dir is not None and spec.env_var is None:
        raise ValueError(
            f"{task} has no local-folder loader; it loads from the hub ({spec.hub_path})"
        )
    if data_dir is not None:
        reader = {"e2e": _e2e_from_csv, "webnlg": _webnlg_from_xml}[task]
        pairs = reader(Path(data_dir), split)
    elif spec.hub_path is None:
        raise FileNotFoundError(
            f"{task} loads from local files only, and none were given: set {spec.env_var} or "
            "pass data_dir."
        )
    else:
        pairs = _from_hub(spec, split)
    return take(pairs, limit, spec.spread_limit)


def take(rows: datasets.Dataset, limit: int | None, spread: bool = False) -> datasets.Dataset:
    """N rows: the first N, or (spread) N evenly spaced through the file, so that a small subset
    of a release sorted by size and category still covers them all. None: every row."""
    if limit is None or limit >= len(rows):
        return rows
    if not spread:
        return rows.select(range(limit))
    return rows.select([i * len(rows) // limit for i in range(limit)])


def group_references(pairs: datasets.Dataset) -> datasets.Dataset:
    """Evaluation items: one row per distinct source, first-seen order, with all its references."""
    frame = pairs.to_pandas()
    others = {c: (c, "first") for c in frame.columns if c not in ("source", "reference")}
    grouped = frame.groupby("source", sort=False).agg(references=("reference", list), **others)
    return datasets.Dataset.from_pandas(grouped.reset_index(), preserve_index=False)


# --- linearization ------------------------------------------------------------------------


def e2e_source(mr: str) -> str:
    """'name[The Eagle], eatType[coffee shop]' -> 'name : The Eagle | Type : coffee shop'."""
    attributes = _E2E_ATTRIBUTE.findall(mr)
    if not attributes or _E2E_ATTRIBUTE.sub("", mr).strip():
        raise ValueError(
            f"meaning representation {mr!r} is not a list of slot[value] separated by commas"
        )
    unknown = [slot for slot, _ in attributes if slot not in E2E_SLOTS]
    if unknown:
        raise ValueError(
            f"meaning representation {mr!r} has unknown slot(s) {unknown}: "
            f"known are {list(E2E_SLOTS)}"
        )
    return " | ".join(f"{E2E_SLOTS[slot]} : {value}" for slot, value in attributes)


def linearize_triples(triples, lowercase_relations: bool = False) -> str:
    """[(subject, relation, object), ...] -> 'subject : relation : object | ...'."""
    return " | ".join(
        f"{subject} : {relation.lower() if lowercase_relations else relation} : {obj}"
        for subject, relation, obj in triples
    )


# --- encoding for the causal LM -----------------------------------------------------------


def load_gpt2_tokenizer(directory: str | os.PathLike):
    """GPT-2's BPE from a folder with vocab.json and merges.txt.

    transformers 5 silently ignores GPT2Tokenizer(vocab_file=..., merges_file=...) and builds an
    empty vocabulary; from_pretrained on the folder reads both files.
    """
    from transformers import GPT2Tokenizer

    directory = Path(directory)
    missing = [name for name in ("vocab.json", "merges.txt") if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"GPT-2 tokenizer folder {directory} lacks {missing}")
    return GPT2Tokenizer.from_pretrained(str(directory))


def leading_special_ids(tokenizer) -> list[int]:
    """The ids a tokenizer puts before any text of its own accord: [bos] for Llama-2/3, [] for
    GPT-2 and SmolLM2 (whatever it appends, e.g. an eos, is left out)."""
    plain = tokenizer.encode("a", add_special_tokens=False)
    marked = tokenizer.encode("a", add_special_tokens=True)
    for start in range(len(marked) - len(plain) + 1):
        if marked[start:start + len(plain)] == plain:
            return marked[:start]
    raise ValueError(f"{type(tokenizer).__name__} encodes 'a' as {plain} alone but {marked} with "
                     "its special tokens: cannot tell which of them lead")


def encode_prompt(source: str, tokenizer) -> list[int]:
    """The generation prompt: leading special tokens (if any), the source, the separating eos."""
    source_ids = tokenizer.encode(source, add_special_tokens=False)
    return leading_special_ids(tokenizer) + source_ids + [tokenizer.eos_token_id]


def encode_pair(source: str, reference: str, tokenizer, max_length: int | None = None) -> dict:
    """input_ids, attention_mask and labels: IGNORE_INDEX except on the reference and final eos."""
    reference_ids = tokenizer.encode(" " + reference, add_special_tokens=False)
    return _join(
        encode_prompt(source, tokenizer), reference_ids, tokenizer.eos_token_id, max_length
    )


def tokenize_nlg(
    pairs: datasets.Dataset, tokenizer, max_length: int | None = None
) -> datasets.Dataset:
    """encode_pair over a pairs dataset (unpadded; the collator pads labels with IGNORE_INDEX)."""
    eos, lead = tokenizer.eos_token_id, leading_special_ids(tokenizer)

    def encode(batch):
        sources = tokenizer(batch["source"], add_special_tokens=False)["input_ids"]
        spaced = [" " + reference for reference in batch["reference"]]
        references = tokenizer(spaced, add_special_tokens=False)["input_ids"]
        rows = [_join(lead + s + [eos], r, eos, max_length) for s, r in zip(sources, references)]
        return {key: [row[key] for row in rows] for key in rows[0]}

    return pairs.map(encode, batched=True, remove_columns=pairs.column_names)


def _join(
    prompt_ids: list[int], reference_ids: list[int], eos: int, max_length: int | None
) -> dict:
    target = reference_ids + [eos]
    input_ids = prompt_ids + target
    labels = [IGNORE_INDEX] * len(prompt_ids) + target
    if max_length is not None:  # the authors keep the head of an over-long row
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


# --- sources ------------------------------------------------------------------------------


def _from_hub(spec: NLGTask, split: str) -> datasets.Dataset:
    try:
        rows = datasets.load_dataset(spec.hub_path, split=split)
    except ConnectionError as err:
        local = f"set {spec.env_var} or pass data_dir" if spec.env_var else "it has no local loader"
        raise ConnectionError(
            f"cannot load {spec.name} from the hub ({spec.hub_path}): the hub is unreachable or "
            f"offline (HF_DATASETS_OFFLINE={os.environ.get('HF_DATASETS_OFFLINE', '')!r}); {local}."
        ) from err
    if spec.name == "e2e":
        sources = [e2e_source(mr) for mr in rows["meaning_representation"]]
        return _pairs(sources, list(rows["human_reference"]))
    sources, references = [], []
    for row in rows:  # DART: one triple set, several annotations
        source = linearize_triples(row["tripleset"], lowercase_relations=True)
        annotations = row["annotations"]  # a dict of lists; a list of dicts in newer exports
        if isinstance(annotations, dict):
            annotations = [{"text": text} for text in annotations["text"]]
        for annotation in annotations:
            sources.append(source)
            references.append(annotation["text"])
    return _pairs(sources, references)


def _e2e_from_csv(folder: Path, split: str) -> datasets.Dataset:
    path = folder / E2E_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(
            f"E2E file not found: {path}. Point E2E_DIR or data_dir at the official E2E release "
            f"folder ({', '.join(E2E_FILES.values())}), or unset both to use the hub."
        )
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if list(frame.columns) != ["mr", "ref"]:
        raise ValueError(f"{path}: expected the columns ['mr', 'ref'], found {list(frame.columns)}")
    sources = []
    for row, mr in enumerate(frame["mr"], start=1):
        try:
            sources.append(e2e_source(mr))
        except ValueError as err:
            raise ValueError(f"{path}, data row {row}: {err}") from None
    empty = frame.index[frame["ref"].str.strip() == ""]
    if len(empty):
        raise ValueError(f"{path}, data row {empty[0] + 1}: the reference is empty")
    return _pairs(sources, frame["ref"].tolist())


def _webnlg_from_xml(folder: Path, split: str) -> datasets.Dataset:
    if split.startswith("test"):
        files = [folder / "test" / "testdata_with_lex.xml"]
    else:
        subfolder = folder / {"train": "train", "validation": "dev"}[split]
        files = sorted(
            subfolder.glob("*triples/*.xml"), key=lambda p: (int(p.parent.name[0]), p.name)
        )
        files = files or [subfolder / "<N>triples" / "*.xml"]
    if not files[0].is_file():
        raise FileNotFoundError(
            f"WebNLG 2017 file(s) not found: {files[0]}. Point WEBNLG_DIR or data_dir at the "
            "release folder holding train/, dev/ and test/testdata_with_lex.xml."
        )
    rows = []
    entries = [(path, entry) for path in files for entry in _xml_entries(path)]
    for number, (path, entry) in enumerate(entries):
        category = entry.get("category", "")
        seen = category in WEBNLG_SEEN_CATEGORIES
        if (split == "test_seen" and not seen) or (split == "test_unseen" and seen):
            continue
        source = linearize_triples(_mtriples(entry, path))
        about = {"category": category, "seen": seen, "entry": number}
        for lex in entry.iter("lex"):
            if lex.get("comment") == "good":  # as the authors: drop lexicalizations marked toFix
                rows.append({"source": source, "reference": (lex.text or "").strip(), **about})
    return datasets.Dataset.from_list(rows)


def _xml_entries(path: Path):
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: not well-formed XML ({err})") from None
    return list(root.iter("entry"))


def _mtriples(entry, path: Path) -> list[tuple[str, str, str]]:
    triples = []
    for mtriple in entry.iter("mtriple"):
        parts = tuple((mtriple.text or "").split(" | "))
        if len(parts) != 3:
            raise ValueError(
                f"{path}, entry {entry.get('eid')}: triple {mtriple.text!r} is not "
                "'subject | relation | object'"
            )
        triples.append(parts)
    if not triples:
        raise ValueError(f"{path}, entry {entry.get('eid')}: no modified triples")
    return triples


def _pairs(sources: list[str], references: list[str]) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"source": sources, "reference": references})
