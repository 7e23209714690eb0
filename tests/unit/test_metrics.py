"""The evaluator's metrics against known values: SQuAD Exact Match, sacrebleu ChrF++, BERTScore."""

from __future__ import annotations

from collections import Counter

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.text_scores import chrf_corpus, chrf_sentence, exact_match, normalize_answer
from p2m.evaluator.metrics import (
    DEFAULT_METRICS,
    BertScore,
    check_metrics,
    score,
    shipped_bertscore_encoder,
)

# ---------------------------------------------------------------- Exact Match (SQuAD v1.1)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat!", "cat"),
        ("  An   apple,\ta day  ", "apple day"),
        ("the theory of a thing", "theory of thing"),  # only whole-word articles go
        ("U.S.A.", "usa"),  # punctuation is removed, not replaced by a space
        ("Denver Broncos", "denver broncos"),
        ("", ""),
    ],
)
def test_squad_normalisation(text, normalized):
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("The Cat!", "cat", 1.0),
        ("the Denver Broncos", "Denver Broncos", 1.0),
        ("Paris.", "paris", 1.0),
        ("a  dog", "The dog", 1.0),
        ("Rome", "Paris", 0.0),
        ("Denver", "Denver Broncos", 0.0),  # no partial credit
    ],
)
def test_exact_match(prediction, reference, expected):
    assert exact_match(prediction, reference) == expected


# ---------------------------------------------------------------- ChrF++
# An independent re-implementation of sacrebleu's chrF (effective-order averaging, beta 2),
# checked first against sacrebleu's own published test values for chrF, then used as the
# reference for ChrF++ (word_order=2).

_PUNCTS = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def _words(text: str) -> list[str]:
    out: list[str] = []
    for w in text.split():
        if len(w) > 1 and w[-1] in _PUNCTS:
            out += [w[:-1], w[-1]]
        elif len(w) > 1 and w[0] in _PUNCTS:
            out += [w[0], w[1:]]
        else:
            out.append(w)
    return out


def _ngrams(hyp: str, word_order: int) -> list[Counter[str]]:
    chars = "".join(hyp.split())
    grams = [Counter(chars[i : i + n] for i in range(len(chars) - n + 1)) for n in range(1, 7)]
    words = _words(hyp)
    for n in range(1, word_order + 1):
        grams.append(Counter(" ".join(words[i : i + n]) for i in range(len(words) - n + 1)))
    return grams


def _stats(hyp: str, ref: str, word_order: int) -> list[tuple[int, int, int]]:
    return [
        (sum(h.values()), sum(r.values()), sum((h & r).values()))
        for h, r in zip(_ngrams(hyp, word_order), _ngrams(ref, word_order), strict=True)
    ]


def _f_score(stats: list[tuple[int, int, int]], beta: float = 2.0) -> float:
    precisions, recalls = [], []
    for n_hyp, n_ref, n_match in stats:
        if n_hyp and n_ref:
            precisions.append(n_match / n_hyp)
            recalls.append(n_match / n_ref)
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0


def reference_chrf(hyps: list[str], refs: list[str], word_order: int = 2) -> float:
    """Corpus chrF: statistics summed over the pairs, then one F-score."""
    total = [(0, 0, 0)] * (6 + word_order)
    for hyp, ref in zip(hyps, refs, strict=True):
        total = [
            (a + x, b + y, c + z)
            for (a, b, c), (x, y, z) in zip(total, _stats(hyp, ref, word_order), strict=True)
        ]
    return _f_score(total)


# sacrebleu's test/test_chrf.py, `test_cases_effective_order` (chrF, word_order=0, beta=3 there;
# beta does not matter where precision equals recall, as in every case below).
@pytest.mark.parametrize(
    ("hyps", "refs", "expected"),
    [
        (["a"], ["a"], 100.0),
        ([""], ["reference"], 0.0),
        (["a b c"], ["a b c"], 100.0),
        (["a b c"], ["abc"], 100.0),
        ([""], ["c"], 0.0),
        (["a", "b"], ["a", "c"], 50.0),
        (["aa"], ["ab"], 25.0),
    ],
)
def test_reference_implementation_matches_sacrebleu_published_chrf(hyps, refs, expected):
    assert reference_chrf(hyps, refs, word_order=0) == pytest.approx(expected, abs=1e-4)


def test_chrf_plus_plus_worked_by_hand():
    # "a b" vs "a c": char 1-grams {a,b} vs {a,c}: P = R = 1/2; char 2-grams "ab" vs "ac": 0;
    # word 1-grams: P = R = 1/2; word 2-grams "a b" vs "a c": 0. Orders 3..6 have no n-grams.
    # Mean P = mean R = (1/2 + 0 + 1/2 + 0) / 4 = 1/4, so F2 = 1/4 -> 25.
    assert chrf_sentence("a b", "a c") == pytest.approx(25.0)
    # "aa" vs "ab": char 1-grams P = R = 1/2, char 2-grams 0, word 1-grams "aa" vs "ab" 0,
    # no word 2-grams: mean P = mean R = 1/6 -> 16.667 (chrF without words: 25, as above).
    assert chrf_sentence("aa", "ab") == pytest.approx(100 / 6)


def test_chrf_perfect_and_disjoint():
    sentence = "Niemand hat die Absicht, eine Mauer zu errichten"
    assert chrf_sentence(sentence, sentence) == pytest.approx(100.0)
    assert chrf_sentence("abcdefg", "hijklmnop") == 0.0
    assert chrf_sentence("", "reference") == 0.0
    assert chrf_corpus(["abc", "xyz"], ["abc", "xyz"]) == pytest.approx(100.0)


# The sentence-level examples of sacrebleu's test suite.
_PAIRS = [
    (
        "Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
        "Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře.",
    ),
    (
        "Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
        "A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři.",
    ),
    (
        "Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
        "Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli.",
    ),
]


@pytest.mark.parametrize(("hyp", "ref"), _PAIRS)
def test_sentence_chrf_plus_plus_matches_the_formula(hyp, ref):
    value = chrf_sentence(hyp, ref)
    assert 0.0 < value < 100.0
    assert value == pytest.approx(reference_chrf([hyp], [ref]), abs=1e-6)


def test_corpus_chrf_sums_statistics_rather_than_averaging_sentences():
    hyps, refs = [h for h, _ in _PAIRS], [r for _, r in _PAIRS]
    corpus = chrf_corpus(hyps, refs)
    assert corpus == pytest.approx(reference_chrf(hyps, refs), abs=1e-6)
    mean = sum(chrf_sentence(h, r) for h, r in _PAIRS) / len(_PAIRS)
    assert corpus != pytest.approx(mean, abs=1e-3)


# ---------------------------------------------------------------- metric names


def test_check_metrics_defaults_and_order():
    assert check_metrics([]) == DEFAULT_METRICS == ("exact_match", "chrf")
    assert check_metrics(["chrf", "exact_match"]) == ("chrf", "exact_match")


def test_unknown_metric_is_named():
    with pytest.raises(InvalidInput) as info:
        check_metrics(["exact_match", "rouge_l"])
    assert info.value.field == "options.metrics"
    assert "rouge_l" in info.value.problem


def test_repeated_or_too_many_metrics():
    with pytest.raises(InvalidInput, match="twice"):
        check_metrics(["chrf", "chrf"])
    with pytest.raises(InvalidInput, match="at most 8"):
        check_metrics(["chrf"] * 9)
    with pytest.raises(InvalidInput, match="bleu"):
        score(["a"], ["a"], ["bleu"])


def test_score_aggregates_by_each_metrics_own_rule():
    scores = score(["The Cat!", "a dog", "Rome"], ["cat", "the dog", "Paris"], DEFAULT_METRICS)
    assert scores.aggregate["exact_match"] == pytest.approx(2 / 3)  # a fraction, 0..1
    assert scores.aggregate["chrf"] == pytest.approx(
        chrf_corpus(["The Cat!", "a dog", "Rome"], ["cat", "the dog", "Paris"])
    )
    assert [s["exact_match"] for s in scores.per_example] == [1.0, 1.0, 0.0]
    assert "nw:2" in scores.notes["chrf"]  # the ChrF++ signature: word 2-grams


# ---------------------------------------------------------------- BERTScore


@pytest.fixture(scope="module")
def bertscore() -> BertScore:
    return BertScore(shipped_bertscore_encoder())


def test_bertscore_identical_paraphrase_unrelated(bertscore):
    f1 = bertscore.f1(
        ["The cat sat on the mat.", "A man is playing a guitar.", "A man is playing a guitar."],
        ["The cat sat on the mat.", "Someone plays the guitar.", "Stock markets fell sharply."],
    )
    assert f1[0] == pytest.approx(1.0, abs=1e-4)
    assert f1[1] > f1[2]
    assert all(0.0 <= value <= 1.0 + 1e-6 for value in f1)


def test_bertscore_blank_sides_and_notes(bertscore):
    assert bertscore.f1(["", " ", "x"], ["", "ref", " "]) == [1.0, 0.0, 0.0]
    assert bertscore.notes == {
        "bertscore_model": "sentence-transformers/all-MiniLM-L6-v2",
        "bertscore_layers": "6",
    }


def test_score_with_bertscore_names_the_encoder(bertscore):
    scores = score(["Paris", "Rome"], ["Paris", "Berlin"], ["bertscore_f1"], bertscore)
    per = [s["bertscore_f1"] for s in scores.per_example]
    assert per[0] == pytest.approx(1.0, abs=1e-4) and per[1] < per[0]
    assert scores.aggregate["bertscore_f1"] == pytest.approx(sum(per) / 2)
    assert scores.notes["bertscore_model"] == "sentence-transformers/all-MiniLM-L6-v2"
