"""Seed statistics: t quantiles against tabulated values, intervals on constructed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from psvae_opt.search.intervals import incomplete_beta, t_cdf, t_interval, t_quantile


@pytest.mark.parametrize(
    ("df", "expected"),  # two-sided 95% critical values of Student's t (standard tables)
    [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (9, 2.262), (19, 2.093), (29, 2.045)],
)
def test_t_quantiles_match_the_tables(df: int, expected: float):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_t_tends_to_the_normal_and_the_cdf_inverts():
    assert t_quantile(0.975, 10**6) == pytest.approx(1.95996, abs=1e-4)
    for df in (1, 3, 12):
        for p in (0.6, 0.9, 0.99):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    assert incomplete_beta(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-4)  # I_0.4(2, 3) in closed form
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_the_interval_of_a_few_seeds():
    values = [0.71, 0.95, 0.80]
    iv = t_interval(values)
    mean, std = np.mean(values), np.std(values, ddof=1)
    half = 4.302653 * std / math.sqrt(3)
    assert (iv.n, iv.mean, iv.std) == (3, pytest.approx(mean), pytest.approx(std))
    assert (iv.low, iv.high) == (pytest.approx(mean - half, abs=1e-6), pytest.approx(mean + half, abs=1e-6))
    one = t_interval([0.4])
    assert (one.n, one.mean, one.std, one.low, one.high) == (1, 0.4, 0.0, -math.inf, math.inf)
    none = t_interval([None, float("nan")])
    assert none.n == 0 and math.isnan(none.mean)
