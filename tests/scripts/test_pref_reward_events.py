"""pref_reward_events.py: the event-triggered average of the learned reward around true-reward steps."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))

from pref_reward_events import event_average  # noqa: E402


def test_event_average_lines_up_the_learned_reward_on_each_event_by_hand():
    true = np.zeros((10, 2), np.float32)
    true[4, 0], true[6, 1], true[5, 1], true[0, 0] = -1, -1, 1, -1  # the event at t=0 has no room: skipped
    learned = np.full((10, 2), 0.5, np.float32)  # the median, subtracted
    learned[3, 0], learned[5, 1] = -1.5, -3.5  # each a step before a lost point
    out = event_average(learned, true, window=2)
    assert out["negative"]["events"] == 2 and out["positive"]["events"] == 1
    assert out["negative"]["mean"] == pytest.approx([0.0, -3.0, 0.0, 0.0, 0.0])  # (-2 - 4) / 2 at offset -1
    assert out["positive"]["mean"] == pytest.approx([0.0, 0.0, -4.0, 0.0, 0.0])  # the +1 at t=5 shares that step
    assert event_average(learned, np.zeros_like(true), 2)["positive"] == {"events": 0, "mean": []}
