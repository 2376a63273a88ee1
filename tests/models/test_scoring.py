from __future__ import annotations

import numpy as np

from models.scoring import RunCondition, ThresholdRule, alarm_flags


def test_run_condition_holds_the_alarm_state_while_stopped() -> None:
    rule = ThresholdRule(on_count=1, off_count=1, off_ratio=1.0)
    scores = [5.0, 5.0, 0.1, 0.1]
    judged = [False, True, False, True]
    assert alarm_flags(scores, 2.0, rule, judged).tolist() == [False, True, True, False]


def test_run_condition_judges_windows_by_run_sensor() -> None:
    cond = RunCondition("speed", 0.5)
    w = np.ones((3, 2, 4))
    w[:, 1, :] = 100.0
    w[1, 1, 2] = 10.0  # stopped for one sample
    assert cond.judged(w, ["temp", "speed"], level=100.0).tolist() == [True, False, True]
    assert cond.judged(w, ["temp", "other"], level=100.0).all()  # sensor absent: always judged
    assert RunCondition.from_json(cond.to_json()) == cond
