"""Confidence intervals without scipy: the exact Student-t quantile against table values, the t-interval and
the Wilson interval of a success rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffusion_rl.evaluation.intervals import normal_quantile, t_cdf, t_interval, t_quantile, wilson_interval


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (3, 3.182), (9, 2.262), (29, 2.045),
                                          (100, 1.984)])
def test_t_quantiles_match_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)  # symmetric


def test_t_cdf_and_quantile_are_inverse_and_tend_to_the_normal():
    for df in (1, 2, 5, 30):
        for p in (0.6, 0.9, 0.99):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)
    assert t_cdf(0.0, 4) == 0.5
    assert t_cdf(1.0, 2) - t_cdf(-1.0, 2) == pytest.approx(0.577, abs=1e-3)  # ± 1 s.e. over 3 seeds
    assert normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-6)
    assert t_quantile(0.975, 1e6) == pytest.approx(normal_quantile(0.975), abs=1e-4)
    with pytest.raises(ValueError, match="between 0 and 1"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.9, 0)


def test_t_interval_is_mean_plus_minus_t_times_the_standard_error():
    values = np.array([47.7, 83.9, 61.74])
    lo, hi = t_interval(values)
    half = 4.302653 * values.std(ddof=1) / math.sqrt(3)
    assert (lo, hi) == pytest.approx((values.mean() - half, values.mean() + half), abs=1e-4)
    assert all(math.isnan(x) for x in t_interval(np.array([1.0])))


def test_wilson_interval_is_not_zero_width_at_all_successes():
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(149, 150) == pytest.approx((0.9632, 0.9988), abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(1 - hi) and (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match="whole numbers"):
        wilson_interval(3.7, 10)  # a count, not a rate
    assert wilson_interval(np.int64(3), 10) == wilson_interval(3, 10)
