from __future__ import annotations

import pytest

from mmcore.metrics import accuracy, accuracy_by_type, majority_answer


def test_accuracy_and_majority():
    assert majority_answer(["yes", "no", "yes"]) == "yes"
    assert accuracy(["a", "b"], ["a", "c"]) == 0.5
    assert accuracy_by_type(["a", "b", "c"], ["a", "c", "c"], ["x", "y", "y"]) == {"x": 1.0, "y": 0.5}
    with pytest.raises(ValueError):
        accuracy([], [])
    with pytest.raises(ValueError, match="majority"):
        majority_answer([])
