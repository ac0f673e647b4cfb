"""Table-driven cases for splitting completions into reasoning and answer."""

from __future__ import annotations

import pytest

from pipeline.filter.parse import Parsed, gradable_text, split_completion


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>\nwork\n</think>\n\nThe answer is 5.", Parsed("work", "The answer is 5.")),
        ("work\n</think>\n\n\\boxed{5}", Parsed("work", "\\boxed{5}")),  # started inside the think block
        ("<think>\nwork that never ends", Parsed("work that never ends", None, "unterminated_think")),
        ("The answer is 5.", Parsed(None, "The answer is 5.", "missing_think")),
        ("<think>\n\n</think>\n\n5", Parsed("", "5", "empty_reasoning")),
        ("<think>\nwork\n</think>\n\n", Parsed("work", "", "empty_answer")),
        ("<think>a</think><think>b</think>5", Parsed("a</think><think>b", "5", "duplicated_tags")),
        ("<think>a</think>x</think>5", Parsed("a</think>x", "5", "duplicated_tags")),
        ("Sure!<think>a</think>5", Parsed("a", "5", "text_before_think")),
    ],
)
def test_split_completion(completion, expected):
    assert split_completion(completion) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>x</think>\n\n\\boxed{5}", "\n\n\\boxed{5}"),
        ("x</think>\\boxed{5}", "\\boxed{5}"),
        ("plain chain of thought, so \\boxed{5}", "plain chain of thought, so \\boxed{5}"),
        ("<think>\nno end \\boxed{5}", None),
        ("<think>a</think>b</think>\\boxed{6}", "\\boxed{6}"),
    ],
)
def test_gradable_text(completion, expected):
    assert gradable_text(completion) == expected
