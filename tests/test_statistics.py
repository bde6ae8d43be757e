"""Paired statistics: interval, p-value, detectable effect and verdicts checked by hand."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from qhd_lib.experiments.statistics import detectable_effect, paired


def test_interval_and_p_value_match_a_hand_computed_paired_t_test() -> None:
    result = paired({42: 11.0, 43: 12.0, 44: 13.0}, {42: 10.0, 43: 10.0, 44: 10.0})
    half = stats.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # differences 1, 2, 3: mean 2, SD 1
    assert result["mean_difference"] == pytest.approx(2.0)
    assert result["interval"] == pytest.approx([2 - half, 2 + half])
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(2 / (1 / math.sqrt(3)), 2))
    assert result["verdict"] == "not resolved at n = 3"


def test_pairs_are_made_by_seed_not_by_position() -> None:
    result = paired({44: 3.0, 42: 1.0, 43: 2.0}, {42: 0.0, 43: 0.0, 44: 0.0, 45: 9.0})
    assert result["seeds"] == [42, 43, 44] and result["differences"] == [1.0, 2.0, 3.0]


def test_verdict_follows_the_direction_of_improvement() -> None:
    lower = {42: 90.0, 43: 91.0, 44: 92.0}
    base = {42: 100.0, 43: 100.5, 44: 101.0}
    assert paired(lower, base)["verdict"] == "supported"
    assert paired(base, lower)["verdict"] == "contradicted"
    assert paired(lower, base, lower_is_better=False)["verdict"] == "contradicted"


def test_one_pair_gives_no_interval_and_no_verdict() -> None:
    result = paired({42: 1.0}, {42: 2.0})
    assert result["interval"] is None and result["verdict"] == "not resolved at n = 1"


def test_detectable_effect_has_the_requested_power() -> None:
    delta, sd, n = detectable_effect(2.0, 3), 2.0, 3
    crit = stats.t.ppf(0.975, n - 1)
    nc = delta / (sd / math.sqrt(n))
    assert stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8)


def test_detectable_effect_approaches_the_normal_formula_for_many_pairs() -> None:
    normal = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * 1.0 / math.sqrt(400)
    assert detectable_effect(1.0, 400) == pytest.approx(normal, rel=0.01)
