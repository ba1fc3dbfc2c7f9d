"""E2E NLG scorer: hand-computed cases, input checks, reference files, official golden values."""
import math
import shutil

import numpy as np
import pytest

from lora_repro.metrics import nlg

requires_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="`java` not on PATH: METEOR and the PTB tokenizer (pycocoevalcap jars) need a JRE",
)


# ------------------------------------------------------------------------------ BLEU


def test_bleu_of_an_exact_match_is_one():
    assert nlg.corpus_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]) == 1.0


def test_bleu_tokenizes_like_mteval_13a_and_ignores_case():
    hypothesis = "Hello, World. It costs 2.50!"
    assert nlg.corpus_bleu([hypothesis], [["hello , world . it costs 2.50 !"]]) == 1.0


CORPUS = (["the cat sat on the mat", "a dog", "it rains in the city centre today"],
          [["the cat sat on a mat", "there is a cat on the mat"], ["a dog barks"],
           ["today it rains in the city centre", "rain in the centre"]])


@pytest.mark.parametrize("weights", [(1, 1, 1), (2, 0, 1), (0, 0, 3), (1, 3, 0)])
def test_bleu_statistics_give_the_corpus_bleu_of_any_resample(weights):
    """Rows of bleu_statistics add: weights @ rows scores the corpus with each input repeated."""
    hypotheses, references = CORPUS
    statistics = nlg.bleu_statistics(hypotheses, references)
    repeated = [i for i, w in enumerate(weights) for _ in range(w)]
    expected = nlg.corpus_bleu([hypotheses[i] for i in repeated], [references[i] for i in repeated])
    assert nlg.bleu_from_statistics(np.asarray(weights) @ statistics) == pytest.approx(expected, abs=1e-12)


def test_bleu_from_statistics_scores_every_row_of_a_batch():
    statistics = nlg.bleu_statistics(*CORPUS)
    draws = np.array([[1, 1, 1], [2, 0, 1]]) @ statistics
    expected = [nlg.bleu_from_statistics(row) for row in draws]
    assert nlg.bleu_from_statistics(draws) == pytest.approx(expected)


def test_bleu_brevity_penalty_on_a_short_hypothesis():
    # Every hypothesis n-gram matches; 5 words against 10 gives exp(1 - 10/5).
    value = nlg.corpus_bleu(["a b c d e"], [["a b c d e f g h i j"]])
    assert value == pytest.approx(math.exp(-1))


def test_bleu_clips_by_the_max_count_in_one_reference_not_the_sum():
    # "the" occurs twice in the first reference and once in the second: the clip is 2, not 3.
    value = nlg.corpus_bleu(["the the the"], [["the cat sat on the mat", "the dog"]], max_n=1)
    assert value == pytest.approx(2 / 3)


def test_bleu_closest_reference_length_ties_go_to_the_shorter():
    # 4 words, references of 3 and 5: r = 3, so no brevity penalty (r = 5 would give exp(-1/4)).
    assert nlg.corpus_bleu(["a b c d"], [["a b c", "a b c d e"]], max_n=1) == pytest.approx(1.0)


def test_bleu_zero_precision_is_floored_not_fatal():
    # 1..3-gram precisions 3/4, 2/3, 1/2; no 4-gram matches -> floored at 1e-15.
    value = nlg.corpus_bleu(["a b c d"], [["a b c e"]])
    assert value == pytest.approx((3 / 4 * 2 / 3 * 1 / 2 * 1e-15) ** 0.25)


def test_short_hypotheses_count_only_their_real_ngrams():
    # The official Python port would add 2 - 4 + 1 = -1 four-grams here and report 1.1067.
    assert nlg.corpus_bleu(["a b c d e f", "a b"], [["a b c d e f"], ["a b"]]) == pytest.approx(1.0)


def test_empty_hypothesis_has_no_tokens():
    # n-grams 3, 2, 1, 0 all matched (the 4-gram precision floors at 1e-15 / 1e-9);
    # closest reference lengths 2 + 3 against 3 system words.
    value = nlg.corpus_bleu(["", "a b c"], [["a b"], ["a b c"]])
    assert value == pytest.approx(math.exp(1 - 5 / 3) * (1e-15 / 1e-9) ** 0.25)
    assert nlg.corpus_nist([""], [["a b"]]) == 0.0


# ------------------------------------------------------------------------------ NIST


def test_nist_information_weights_and_length_penalty_on_a_two_segment_corpus():
    hypotheses = ["a b", "a c"]
    references = [["a b", "a b c d"], ["a c"]]
    # Reference words of the whole corpus: 8; a:3, b:2, c:2, d:1; bigrams (a b):2, (a c):1.
    unigram_info = (2 * math.log2(8 / 3) + math.log2(8 / 2) + math.log2(8 / 2)) / 4
    bigram_info = (math.log2(3 / 2) + math.log2(3 / 1)) / 2  # log2(count(a) / count(a x))
    # 4 system words against mean reference lengths 3 + 2 = 5.
    beta = -math.log(0.5) / math.log(1.5) ** 2
    penalty = math.exp(-beta * math.log(4 / 5) ** 2)
    expected = (unigram_info + bigram_info) * penalty
    assert nlg.corpus_nist(hypotheses, references) == pytest.approx(expected)


def test_nist_has_no_length_penalty_at_full_length():
    value = nlg.corpus_nist(["a b", "a c"], [["a b"], ["a c"]])
    # a: log2(4/2), b and c: log2(4/1); bigrams (a b), (a c): log2(2/1).
    assert value == pytest.approx((1 + 2 + 1 + 2) / 4 + (1 + 1) / 2)


# ------------------------------------------------------------- ROUGE-L and CIDEr (tokenized)


def test_rouge_l_takes_best_precision_and_best_recall_over_references():
    # LCS 2 with each reference: precision 2/4 both times, recall 2/3 and 2/2.
    precision, recall, beta2 = 0.5, 1.0, 1.2**2
    expected = (1 + beta2) * precision * recall / (recall + beta2 * precision)
    assert nlg.rouge_l(["a b c d"], [["a c e", "b d"]]) == pytest.approx(expected)


def test_cider_idf_comes_from_the_scored_references():
    # "a" is in every input's references, so its weight log(2) - log(2) is 0: the second
    # segment has nothing left to match. The first matches its 1- and 2-grams (of 4 orders).
    assert nlg.cider(["a b", "a"], [["a b"], ["a"]]) == pytest.approx(10 * 2 / 4 / 2)


# ------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("hypotheses", "references", "error", "message"),
    [
        (["a", "b"], [["a"]], ValueError, "2 hypotheses but 1 reference"),
        (["a", "b"], [["a"], []], ValueError, r"references\[1\] is empty"),
        ([], [], ValueError, "0 hypotheses"),
        (["a"], ["a"], TypeError, r"references\[0\] must be a list of str"),
        ([None], [["a"]], TypeError, "hypothesis 0"),
    ],
)
def test_bad_input_names_the_problem(hypotheses, references, error, message):
    for scorer in (nlg.score, nlg.bleu_nist, nlg.coco_scores, nlg.rouge_l):
        with pytest.raises(error, match=message):
            scorer(hypotheses, references)


# ---------------------------------------------------------------------- reference readers


def test_csv_references_group_by_mr_in_first_seen_order(tmp_path):
    path = tmp_path / "refs.csv"
    path.write_text('mr,ref\n"name[X], food[Thai]",X serves Thai.\nname[Y],Y is here.\n'
                    '"name[X], food[Thai]","X, a Thai place."\n', encoding="utf-8")
    refs = nlg.read_references(path)
    assert refs.mrs == ["name[X], food[Thai]", "name[Y]"]
    assert refs.references == [["X serves Thai.", "X, a Thai place."], ["Y is here."]]


def test_lora_format_references_group_by_mr(tmp_path):
    path = tmp_path / "valid.txt"
    lines = ["name : X | food : Thai||X serves Thai . ", "name : X | food : Thai||X , Thai . ",
             "name : Y||Y is here . "]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    refs = nlg.read_references(path)
    assert refs.mrs == ["name : X | food : Thai", "name : Y"]
    assert refs.references == [["X serves Thai .", "X , Thai ."], ["Y is here ."]]


def test_reference_readers_reject_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        nlg.read_references(tmp_path / "missing.txt")
    bad_txt = tmp_path / "bad.txt"
    bad_txt.write_text("name : X||fine\nno separator here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.txt:2"):
        nlg.read_references(bad_txt)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("meaning,text\nx,y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="missing column"):
        nlg.read_references(bad_csv)


# ------------------------------------------------------------------ golden: official scorer


def _devset_self_references(shared_data):
    refs = nlg.read_references(shared_data / "e2e" / "devset.csv")
    return [group[0] for group in refs.references], refs.references


def test_devset_groups_match_the_official_release(shared_data):
    refs = nlg.read_references(shared_data / "e2e" / "devset.csv")
    assert len(refs.mrs) == 547 and sum(map(len, refs.references)) == 4672
    lora = nlg.read_references(shared_data / "e2e" / "lora_format" / "valid.txt")
    assert [len(group) for group in lora.references] == [len(group) for group in refs.references]


def test_devset_golden_bleu_nist(shared_data):
    scores = nlg.bleu_nist(*_devset_self_references(shared_data))
    assert round(scores["bleu"], 4) == 1.0
    assert round(scores["nist"], 4) == 14.0335


@requires_java
def test_ptb_tokenize_lowercases_drops_punctuation_and_keeps_lines():
    tokens = nlg.ptb_tokenize(["Hello, World!", "", "It's family-friendly.", "two\nlines"])
    assert tokens == ["hello world", "", "it 's family-friendly", "two lines"]


@requires_java
def test_score_small_corpus_and_meteor_is_corpus_level():
    long_sentence = "the cat sat on the mat near the door of the old house"
    scores = nlg.score([long_sentence, "blue"], [[long_sentence], ["dog"]])
    assert list(scores) == ["bleu", "nist", "meteor", "rouge_l", "cider"]
    assert scores["rouge_l"] == pytest.approx(0.5)  # 1 and 0
    # Segment scores are 1 and 0 (mean 0.5); the corpus statistics are dominated by the
    # 12-word match, which is what the official EVAL line reports.
    assert 0.8 < scores["meteor"] < 1.0


@pytest.mark.slow
@requires_java
def test_devset_golden_all_metrics(shared_data):
    scores = nlg.score(*_devset_self_references(shared_data))
    rounded = {name: round(value, 4) for name, value in scores.items()}
    golden = {"bleu": 1.0, "nist": 14.0335, "meteor": 1.0, "rouge_l": 1.0, "cider": 3.0409}
    assert rounded == golden
