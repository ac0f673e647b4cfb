"""pass@k, cons@k and the standard error against exact, hand-computed values."""

from __future__ import annotations

import itertools
import math

import pytest

from pipeline.eval.metrics import cons_at_k, majority, pass_at_k, score_problems


@pytest.mark.parametrize(("n", "c"), [(8, 0), (8, 1), (8, 3), (8, 8), (5, 2), (16, 7)])
@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_pass_at_k_equals_the_exact_fraction_of_k_subsets_with_a_correct_sample(n, c, k):
    if k > n:
        return
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    exact = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="needs at least 4"):
        pass_at_k(3, 1, 4)


@pytest.mark.parametrize(
    ("correct", "answers", "k", "expected"),
    [
        ([True, False, False], ["5", "6", "6"], 3, False),  # majority "6" is wrong
        ([True, True, False], ["5", "5", "6"], 3, True),
        ([False, True, False, True], ["7", "5", "8", "5"], 4, True),  # "5" twice beats singletons
        ([True, False], ["5", "6"], 2, True),  # a tie goes to the answer seen first
        ([False, False], [None, None], 2, False),  # nothing extracted: no vote
        ([True, False, False, False], ["5", "6", "6", "6"], 1, True),  # only the first k samples vote
    ],
)
def test_cons_at_k(correct, answers, k, expected):
    assert cons_at_k(correct, answers, k) is expected


def test_majority_ignores_missing_answers():
    assert majority([None, "3", None, "3", "4"]) == "3" and majority([None, ""]) is None


def test_score_problems_mean_stderr_and_pass_at_k():
    correct = [[True, True, False, False], [True, True, True, True], [False, False, False, False]]
    answers = [["1", "1", "2", "3"], ["4"] * 4, ["9", "8", "9", "7"]]
    s = score_problems(correct, answers, ks=[1, 2])
    shares = [0.5, 1.0, 0.0]
    mean = sum(shares) / 3
    stderr = math.sqrt(sum((x - mean) ** 2 for x in shares) / 2 / 3)
    assert s["pass@1"] == pytest.approx(mean) and s["pass@1_stderr"] == pytest.approx(stderr)
    assert s["pass@2"] == pytest.approx((pass_at_k(4, 2, 2) + 1 + 0) / 3)
    assert s["cons@4"] == pytest.approx(2 / 3) and s["problems"] == 3 and s["n"] == 4
