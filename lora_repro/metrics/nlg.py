"""The E2E NLG Challenge scorer (tuetschek/e2e-metrics in its Python mode), reimplemented.

BLEU and NIST follow the challenge's Python port of mteval-13a: 13a tokenization, lowercased
n-grams, corpus-level statistics. METEOR 1.5, ROUGE-L and CIDEr-D run on the Stanford PTB
tokenization as in the MS-COCO caption scorer, using the jars and scorers that PyPI's
`pycocoevalcap==1.2` ships (its `eval` module is never imported: SPICE downloads at run time).

    score(hypotheses, references) -> {"bleu", "nist", "meteor", "rouge_l", "cider"}

One hypothesis per input; `references[i]` lists every human reference for input i. BLEU, METEOR
and ROUGE-L are on 0..1, NIST and CIDEr on their own scales, as the official scorer reports them.
"""
from __future__ import annotations

import contextlib
import csv
import math
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as _coco_meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer import ptbtokenizer as _coco_ptb
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

METRIC_NAMES = ("bleu", "nist", "meteor", "rouge_l", "cider")

PTB_JAR = Path(_coco_ptb.__file__).parent / _coco_ptb.STANFORD_CORENLP_3_4_1_JAR
METEOR_JAR = Path(_coco_meteor.__file__).parent / _coco_meteor.METEOR_JAR
# Tokens the COCO scorer drops after PTB tokenization.
PTB_PUNCTUATION = frozenset(_coco_ptb.PUNCTUATIONS)

BLEU_MAX_N = 4
NIST_MAX_N = 5
# mteval-13a: the NIST length penalty is 0.5 when the system output is 2/3 of the reference.
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2
ZERO_HITS_FLOOR = 1e-15
ZERO_LENGTH_FLOOR = 1e-9


# ---------------------------------------------------------------------------- input checks


def check_corpus(hypotheses: list[str], references: list[list[str]]) -> None:
    """Raise unless there is one non-empty list of reference strings per hypothesis string."""
    if len(hypotheses) != len(references):
        raise ValueError(
            f"got {len(hypotheses)} hypotheses but {len(references)} reference lists; "
            "each hypothesis needs the list of references for its own input"
        )
    if not hypotheses:
        raise ValueError("nothing to score: 0 hypotheses")
    for index, hypothesis in enumerate(hypotheses):
        if not isinstance(hypothesis, str):
            raise TypeError(f"hypothesis {index} is a {type(hypothesis).__name__}, not a str")
    for index, refs in enumerate(references):
        if isinstance(refs, str) or not all(isinstance(ref, str) for ref in refs):
            raise TypeError(f"references[{index}] must be a list of str, got {refs!r:.80}")
        if len(refs) == 0:
            raise ValueError(f"references[{index}] is empty: every input needs >= 1 reference")


# ------------------------------------------------------------------ BLEU and NIST (mteval-13a)

_tokenizer_13a = Tokenizer13a()


def mteval_tokenize(text: str) -> list[str]:
    """mteval-13a tokens, lowercased (the E2E scorer matches n-grams case-insensitively)."""
    return _tokenizer_13a(text).lower().split()


def _ngram_counts(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _max_reference_counts(references: list[list[str]], n: int) -> Counter:
    """Each n-gram's largest count in any single reference (the clipping ceiling)."""
    ceiling = Counter()
    for ref in references:
        ceiling |= _ngram_counts(ref, n)
    return ceiling


def _clipped_hits(hypothesis: list[str], references: list[list[str]], n: int) -> Counter:
    return _ngram_counts(hypothesis, n) & _max_reference_counts(references, n)


def _ngram_total(tokens: list[str], n: int) -> int:
    # The official Python port adds len - n + 1 even when negative, so a hypothesis shorter
    # than n lowers the totals (an exact-match corpus can then score BLEU > 1); mteval-13a
    # (Perl) counts real n-grams, as here. Both agree once every hypothesis has >= n tokens.
    return max(0, len(tokens) - n + 1)


def _tokenize_corpus(hypotheses, references):
    return (
        [mteval_tokenize(hyp) for hyp in hypotheses],
        [[mteval_tokenize(ref) for ref in refs] for refs in references],
    )


def corpus_bleu(
    hypotheses: list[str], references: list[list[str]], max_n: int = BLEU_MAX_N
) -> float:
    """Corpus BLEU (0..1) with the E2E scorer's clipping, closest reference length and floors."""
    return float(bleu_from_statistics(bleu_statistics(hypotheses, references, max_n).sum(axis=0)))


def bleu_statistics(
    hypotheses: list[str], references: list[list[str]], max_n: int = BLEU_MAX_N
) -> np.ndarray:
    """BLEU's sufficient statistics, one row per input: clipped n-gram hits (n = 1..max_n), the
    hypothesis' n-gram counts, and the closest reference length. They add over inputs, so the
    corpus BLEU of any resample of the inputs is bleu_from_statistics(weights @ statistics)."""
    check_corpus(hypotheses, references)
    return _bleu_statistics(*_tokenize_corpus(hypotheses, references), max_n)


def _bleu_statistics(hyp_tokens, ref_tokens, max_n) -> np.ndarray:
    rows = np.zeros((len(hyp_tokens), 2 * max_n + 1))
    for row, hyp, refs in zip(rows, hyp_tokens, ref_tokens):
        for n in range(1, max_n + 1):
            row[n - 1] = sum(_clipped_hits(hyp, refs, n).values())
            row[max_n + n - 1] = _ngram_total(hyp, n)
        row[-1] = len(min(refs, key=lambda ref: (abs(len(ref) - len(hyp)), len(ref))))
    return rows


def hypothesis_lengths(statistics: np.ndarray) -> np.ndarray:
    """Each input's hypothesis length in tokens (its unigram count), from bleu_statistics."""
    statistics = np.asarray(statistics)
    return statistics[..., (statistics.shape[-1] - 1) // 2]


def bleu_from_statistics(totals: np.ndarray) -> np.ndarray:
    """Corpus BLEU from summed statistics (the last axis as bleu_statistics' columns); any
    leading axes, e.g. one row per bootstrap draw."""
    totals = np.asarray(totals, dtype=np.float64)
    max_n = (totals.shape[-1] - 1) // 2
    hits, hyp_ngram_totals = totals[..., :max_n], totals[..., max_n:2 * max_n]
    closest_ref_length = totals[..., -1]
    log_precision = np.log(np.maximum(hits, ZERO_HITS_FLOOR)
                           / np.maximum(hyp_ngram_totals, ZERO_LENGTH_FLOOR)).sum(axis=-1) / max_n
    hyp_length = np.where(hyp_ngram_totals[..., 0] > 0, hyp_ngram_totals[..., 0], 1e-5)
    brevity = np.where(hyp_length <= closest_ref_length,
                       np.exp(1 - closest_ref_length / hyp_length), 1.0)
    return brevity * np.exp(log_precision)


def corpus_nist(
    hypotheses: list[str], references: list[list[str]], max_n: int = NIST_MAX_N
) -> float:
    """Corpus NIST (mteval-13a formula, as the E2E scorer computes it; not nltk's)."""
    check_corpus(hypotheses, references)
    return _nist(*_tokenize_corpus(hypotheses, references), max_n)


def _nist(hyp_tokens, ref_tokens, max_n):
    # reference_counts[n][g]: occurrences of n-gram g in all references of the corpus; the
    # 0-gram () counts every reference word, so unigram weights use the total as numerator.
    reference_counts = [Counter() for _ in range(max_n + 1)]
    hits_per_order = [[] for _ in range(max_n + 1)]
    hyp_ngram_totals = [0] * (max_n + 1)
    mean_ref_length_sum = 0.0
    for hyp, refs in zip(hyp_tokens, ref_tokens):
        for n in range(1, max_n + 1):
            hits_per_order[n].append(_clipped_hits(hyp, refs, n))
            hyp_ngram_totals[n] += _ngram_total(hyp, n)
            for ref in refs:
                reference_counts[n].update(_ngram_counts(ref, n))
        reference_counts[0][()] += sum(len(ref) for ref in refs)
        mean_ref_length_sum += sum(len(ref) for ref in refs) / len(refs)

    def information(ngram):
        prefix_count = reference_counts[len(ngram) - 1][ngram[:-1]]
        return math.log2(prefix_count / reference_counts[len(ngram)][ngram])

    precision_sum = 0.0
    for n in range(1, max_n + 1):
        if hyp_ngram_totals[n] == 0:  # no hypothesis has n tokens
            continue
        matched_information = sum(
            information(ngram) * count
            for hits in hits_per_order[n]
            for ngram, count in hits.items()
        )
        precision_sum += matched_information / hyp_ngram_totals[n]
    return precision_sum * _nist_length_penalty(hyp_ngram_totals[1], mean_ref_length_sum)


def _nist_length_penalty(system_length: float, reference_length: float) -> float:
    if reference_length == 0:  # only empty references: nothing to fall short of
        return 1.0
    ratio = system_length / reference_length
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


def bleu_nist(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"bleu", "nist"} as the E2E scorer's Python mode reports them; needs no Java."""
    check_corpus(hypotheses, references)
    hyp_tokens, ref_tokens = _tokenize_corpus(hypotheses, references)
    return {
        "bleu": float(bleu_from_statistics(_bleu_statistics(hyp_tokens, ref_tokens, BLEU_MAX_N).sum(axis=0))),
        "nist": _nist(hyp_tokens, ref_tokens, NIST_MAX_N),
    }


# ------------------------------------------------------- METEOR, ROUGE-L, CIDEr (COCO scorer)


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "`java` not found on PATH: METEOR and the PTB tokenizer run on the jars shipped by "
            "pycocoevalcap (install a JRE, e.g. `apt-get install default-jre-headless`)"
        )
    return java


def ptb_tokenize(sentences: list[str]) -> list[str]:
    """Stanford PTB tokens, lowercased, COCO punctuation removed, one JVM for all sentences."""
    # The tokenizer keeps one output line per input line; any other line break would shift them.
    text = "\n".join(" ".join(sentence.splitlines()) for sentence in sentences)
    command = [_java(), "-cp", str(PTB_JAR), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8"]
    done = subprocess.run(command, input=text.encode("utf-8"), capture_output=True, check=False)
    if done.returncode != 0:
        details = done.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"PTB tokenizer failed (exit {done.returncode}): {details}")
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) == len(sentences) + 1 and lines[-1] == "":
        lines.pop()  # a trailing newline after the last line
    if len(lines) != len(sentences):
        raise RuntimeError(
            f"PTB tokenizer returned {len(lines)} lines for {len(sentences)} sentences"
        )
    return [" ".join(token for token in line.rstrip().split(" ") if token not in PTB_PUNCTUATION)
            for line in lines]


def ptb_tokenize_corpus(hypotheses, references) -> tuple[list[str], list[list[str]]]:
    """PTB-tokenize hypotheses and references in a single tokenizer run."""
    flat = list(hypotheses) + [ref for refs in references for ref in refs]
    tokens = ptb_tokenize(flat)
    tok_hyps, rest = tokens[: len(hypotheses)], iter(tokens[len(hypotheses):])
    return tok_hyps, [[next(rest) for _ in refs] for refs in references]


class Meteor:
    """METEOR 1.5 (`-l en -norm`) over `-stdio`: one JVM, the corpus-level EVAL score.

    The JVM starts on construction and takes ~10 s to load its paraphrase table, so start it
    early and do other work meanwhile; use as a context manager so it is always stopped.
    """

    def __init__(self):
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the JVM)
        command = [_java(), "-Xmx2G", "-Dfile.encoding=UTF-8", "-jar", str(METEOR_JAR),
                   "-", "-", "-stdio", "-l", "en", "-norm"]
        self._process = subprocess.Popen(command, cwd=METEOR_JAR.parent, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def _send(self, line: str) -> None:
        try:
            self._process.stdin.write((line + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _receive(self) -> str:
        line = self._process.stdout.readline()
        if not line:
            raise self._died()
        return line.decode("utf-8").strip()

    def _died(self) -> RuntimeError:
        self._process.wait()
        self._stderr.seek(0)
        details = self._stderr.read().decode(errors="replace")[-2000:]
        return RuntimeError(f"METEOR exited early (exit {self._process.returncode}): {details}")

    def corpus_score(self, tok_hypotheses: list[str], tok_references: list[list[str]]) -> float:
        """Corpus METEOR from per-segment statistics, as the official scorer reads it."""
        segment_stats = []
        for hyp, refs in zip(tok_hypotheses, tok_references):
            fields = [_meteor_field(ref) for ref in refs] + [_meteor_field(hyp)]
            self._send(" ||| ".join(["SCORE", *fields]))
            segment_stats.append(self._receive())
        self._send(" ||| ".join(["EVAL", *segment_stats]))
        for _ in segment_stats:  # one score per segment comes first; the corpus score is last
            self._receive()
        return float(self._receive())


def _meteor_field(text: str) -> str:
    """Keep text from breaking the `|||`-separated protocol (the COCO wrapper's own cleanup)."""
    return text.replace("|||", "").replace("  ", " ")


def meteor(tok_hypotheses: list[str], tok_references: list[list[str]]) -> float:
    """Corpus METEOR 1.5 on PTB-tokenized text (starts and stops one JVM)."""
    check_corpus(tok_hypotheses, tok_references)
    with Meteor() as scorer:
        return scorer.corpus_score(tok_hypotheses, tok_references)


def _as_coco(tok_hypotheses, tok_references):
    return ({i: list(refs) for i, refs in enumerate(tok_references)},
            {i: [hyp] for i, hyp in enumerate(tok_hypotheses)})


def rouge_l(tok_hypotheses: list[str], tok_references: list[list[str]]) -> float:
    """Mean over segments of ROUGE-L (beta 1.2, best precision and recall over references)."""
    check_corpus(tok_hypotheses, tok_references)
    return float(Rouge().compute_score(*_as_coco(tok_hypotheses, tok_references))[0])


def cider(tok_hypotheses: list[str], tok_references: list[list[str]]) -> float:
    """CIDEr-D with document frequencies over the references being scored."""
    check_corpus(tok_hypotheses, tok_references)
    return float(Cider().compute_score(*_as_coco(tok_hypotheses, tok_references))[0])


def coco_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """{"meteor", "rouge_l", "cider"} on raw text: PTB tokenization, then the three scorers."""
    check_corpus(hypotheses, references)
    with Meteor() as meteor_scorer:  # its JVM boots while the rest runs
        tok_hyps, tok_refs = ptb_tokenize_corpus(hypotheses, references)
        scores = {"rouge_l": rouge_l(tok_hyps, tok_refs), "cider": cider(tok_hyps, tok_refs)}
        scores["meteor"] = meteor_scorer.corpus_score(tok_hyps, tok_refs)
    return scores


def score(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """All five E2E metrics: {"bleu", "nist", "meteor", "rouge_l", "cider"}."""
    check_corpus(hypotheses, references)
    scores = {**bleu_nist(hypotheses, references), **coco_scores(hypotheses, references)}
    return {name: scores[name] for name in METRIC_NAMES}


# ------------------------------------------------------------------------ reference files


class E2EReferences(NamedTuple):
    """Distinct MRs in first-seen order, and the references of each."""

    mrs: list[str]
    references: list[list[str]]


def _group_by_mr(pairs) -> E2EReferences:
    grouped: dict[str, list[str]] = {}
    for mr, ref in pairs:
        grouped.setdefault(mr, []).append(ref)
    return E2EReferences(list(grouped), list(grouped.values()))


def read_e2e_csv(path: str | Path) -> E2EReferences:
    """The official E2E release CSV (columns `mr,ref`), grouped by MR."""
    path = Path(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"mr", "ref"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {sorted(missing)}; found {reader.fieldnames}"
            )
        return _group_by_mr((row["mr"], row["ref"].strip()) for row in reader)


def read_lora_format(path: str | Path) -> E2EReferences:
    """The LoRA authors' pre-tokenized `MR||reference` lines, grouped by MR."""
    path = Path(path)
    pairs = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            if "||" not in line:
                raise ValueError(
                    f"{path}:{line_number}: expected 'MR||reference', got {line.strip()!r:.80}"
                )
            mr, ref = line.split("||", 1)
            pairs.append((mr.strip(), ref.strip()))
    return _group_by_mr(pairs)


def read_references(path: str | Path) -> E2EReferences:
    """E2E references from a `.csv` release file or a lora_format `.txt` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"E2E reference file not found: {path}")
    return read_e2e_csv(path) if path.suffix.lower() == ".csv" else read_lora_format(path)
