"""FD vs KID at small n: KID is unbiased (oracle: two samples of one Gaussian), FD's bias follows
its closed form; evaluate() reports KID first and marks FD below fd_min_n."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difflab.data.datasets import load_dataset
from difflab.evaluation.evaluate import evaluate, kid_name, reference_stats
from difflab.evaluation.features import load_feature_net
from difflab.evaluation.metrics import (
    fd_min_n,
    feature_stats,
    frechet_distance,
    kid,
    kid_jackknife,
)


@pytest.fixture(scope="module")
def same_distribution_repeats():
    """KID, its jackknife SE and FD of 120 pairs of independent N(0, I₈) samples, n = 50 each."""
    g = torch.Generator().manual_seed(0)
    d, n, rows = 8, 50, []
    for _ in range(120):
        a, b = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(2))
        mmd2, se = kid_jackknife(a, b)
        rows.append((kid(a, b, subsets=1)[0], mmd2, se,
                     frechet_distance(*feature_stats(a), *feature_stats(b))))  # fmt: skip
    return d, n, np.array(rows)


def test_kid_is_unbiased_at_small_n(same_distribution_repeats):
    """E[KID] = MMD²(P, P) = 0: the mean over repeats is within 3 standard errors of 0."""
    _, _, rows = same_distribution_repeats
    for column in (0, 1):  # the subset estimate as evaluate reports it, the full U-statistic
        values = rows[:, column]
        assert abs(values.mean()) < 3 * values.std(ddof=1) / np.sqrt(len(values))
    assert np.allclose(rows[:, 0], rows[:, 1])  # n < subset_size: one subset is the whole sets


def test_kid_standard_error_matches_the_spread_over_repeats(same_distribution_repeats):
    """The jackknife SE is of the order of KID's real spread (conservative at P = Q)."""
    _, _, rows = same_distribution_repeats
    ratio = rows[:, 2].mean() / rows[:, 1].std(ddof=1)
    assert 0.9 < ratio < 2.0, ratio
    g = torch.Generator().manual_seed(1)  # P ≠ Q: the jackknife is close
    est = [kid_jackknife(torch.randn(80, 8, generator=g, dtype=torch.float64) + 0.3,
                         torch.randn(80, 8, generator=g, dtype=torch.float64)) for _ in range(80)]  # fmt: skip
    values, ses = np.array(est).T
    assert 0.8 < ses.mean() / values.std(ddof=1) < 1.25


def test_fd_at_small_n_is_clearly_positive_and_follows_its_bias(same_distribution_repeats):
    """E[FD] ≈ 2d/n + d(d + 1)/(2n) for two n-samples of N(0, I_d), far above 0."""
    d, n, rows = same_distribution_repeats
    fds = rows[:, 3]
    assert fds.mean() > 20 * fds.std(ddof=1) / np.sqrt(len(fds))
    assert fds.mean() == pytest.approx(2 * d / n + d * (d + 1) / (2 * n), rel=0.1)


def test_fd_min_n_rule():
    assert fd_min_n(2) == 2048 and fd_min_n(128) == 2048 and fd_min_n(2048) == 20480


def test_small_n_report_puts_kid_first_and_marks_fd():
    raw = load_feature_net("raw")
    ref = reference_stats({"name": "digits"}, raw)  # 1797 items of 64-d pixels: small n
    out = evaluate(load_dataset({"name": "digits"}).x[:200], ref, raw, ("fd", "kid", "pr"),
                   kid_subsets=5, kid_subset_size=100)  # fmt: skip
    keys = list(out)
    assert keys.index("note") < keys.index("kid_mean") < keys.index("kid_se") < keys.index("fd")
    assert out["fd_small_n"] is True and out["fd"] > 0 and out["kid_se"] > 0
    assert "n = 200 < 2048" in out["note"] and "KID-raw" in out["note"]
    assert out["kid_name"] == "KID-raw" and kid_name("FID") == "KID"
    tiny = evaluate(load_dataset({"name": "digits"}).x[:40], ref, raw, ("fd", "kid"),
                    kid_subsets=2)  # fmt: skip
    assert tiny["fd"] is None and tiny["fd_small_n"] is True  # 40 ≤ 64 dims: no covariance


def test_large_n_report_keeps_fd_first_and_unmarked():
    raw = load_feature_net("raw")
    ref = reference_stats({"name": "gaussian_mixture", "n": 2500}, raw)
    pts = load_dataset({"name": "gaussian_mixture", "n": 2500, "seed": 1}).x
    out = evaluate(pts, ref, raw, ("fd", "kid"), kid_subsets=2, kid_subset_size=200)
    keys = list(out)
    assert "note" not in out and "fd_small_n" not in out
    assert keys.index("fd") < keys.index("kid_mean") and out["fd"] < 0.05
