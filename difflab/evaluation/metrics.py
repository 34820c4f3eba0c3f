"""Sample-quality metrics on features: Fréchet distance, KID, Inception Score, precision/recall.

Every function takes features (or class probabilities) already computed by a feature network
(difflab/features.py) and returns plain Python floats. Moments are taken in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from difflab.core.errors import UsageError

ArrayLike = np.ndarray | Tensor


def _as_f64(x: ArrayLike, what: str, ndim: int) -> np.ndarray:
    """A float64 numpy copy of `x`, checked for rank and finiteness."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise UsageError(f"{what} must have {ndim} dimensions, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise UsageError(f"{what} holds NaN or inf; check the images and the feature network")
    return x


# ---------------------------------------------------------------- Fréchet distance


def feature_stats(
    features: ArrayLike, *, allow_singular: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D] in float64 (Heusel 2017 eq. 6);
    N ≤ D (a singular covariance) is an error unless `allow_singular` (N ≥ 2)."""
    f = _as_f64(features, "features", 2)
    n, d = f.shape
    if n <= d and not (allow_singular and n >= 2):
        raise UsageError(
            f"{n} samples of {d}-d features give a singular {d}×{d} covariance; use more than "
            f"{d} samples (≥ {10 * d} for a stable estimate) or a lower-dimensional feature "
            "network (e.g. a 'domain' net trained with train_feature_net)"
        )
    mu = f.mean(axis=0)  # [D]
    sigma = np.cov(f, rowvar=False).reshape(d, d)  # [D, D]
    return mu, sigma


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix by eigen-decomposition."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """‖μ1−μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) (Fréchet 1957; Dowson & Landau 1982; Heusel 2017 eq. 6).

    tr (Σ1Σ2)^½ is the sum of square roots of the eigenvalues of the symmetric PSD matrix
    Σ1^½ Σ2 Σ1^½ (similar to Σ1Σ2), which stays exact when either covariance is singular.
    """
    mu1, mu2 = _as_f64(mu1, "mu1", 1), _as_f64(mu2, "mu2", 1)
    s1, s2 = _as_f64(sigma1, "sigma1", 2), _as_f64(sigma2, "sigma2", 2)
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise UsageError(
            f"Fréchet distance needs matching shapes, got mu {mu1.shape}/{mu2.shape} and sigma "
            f"{s1.shape}/{s2.shape}; compute both statistics with the same feature network"
        )
    root1 = _sqrt_psd(s1)  # [D, D]
    m = root1 @ s2 @ root1  # [D, D] symmetric PSD, same spectrum as Σ1Σ2
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
    return max(float(fd), 0.0)  # FD ≥ 0; a tiny negative value is rounding


# ---------------------------------------------------------------- KID


def _poly_kernel(x: Tensor, y: Tensor) -> Tensor:
    """Cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³ (Bińkowski 2018 §4)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3  # [N, M]


def _mmd2_unbiased(x: Tensor, y: Tensor) -> float:
    """Unbiased MMD² estimate (Gretton 2012 eq. 3) with the cubic polynomial kernel."""
    m = x.shape[0]
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)  # [m, m]
    off_xx = kxx.sum() - kxx.diagonal().sum()
    off_yy = kyy.sum() - kyy.diagonal().sum()
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * kxy.sum() / (m * m))


def _kid_features(feats_a: ArrayLike, feats_b: ArrayLike) -> tuple[Tensor, Tensor]:
    """Two feature sets [N, D], [M, D] as float64 tensors; UsageError unless D is equal."""
    a = torch.from_numpy(_as_f64(feats_a, "feats_a", 2))
    b = torch.from_numpy(_as_f64(feats_b, "feats_b", 2))
    if a.shape[1] != b.shape[1]:
        raise UsageError(
            f"KID needs features of equal width, got {a.shape[1]} and {b.shape[1]}; "
            "use the same feature network for both sets"
        )
    return a, b


def kid(
    feats_a: ArrayLike,
    feats_b: ArrayLike,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std of unbiased MMD² over random subsets (Bińkowski 2018)."""
    a, b = _kid_features(feats_a, feats_b)
    if subsets < 1:
        raise UsageError(f"subsets={subsets} is invalid; pass a positive integer")
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise UsageError(
            f"KID needs at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}; "
            "pass more samples"
        )
    rng = np.random.default_rng(seed)
    mmds = []
    for _ in range(subsets):
        ia = torch.from_numpy(rng.choice(a.shape[0], m, replace=False))
        ib = torch.from_numpy(rng.choice(b.shape[0], m, replace=False))
        mmds.append(_mmd2_unbiased(a[ia], b[ib]))
    return float(np.mean(mmds)), float(np.std(mmds))


def kid_jackknife(
    feats_a: ArrayLike, feats_b: ArrayLike, *, max_items: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Unbiased MMD² of all items (Gretton 2012 eq. 3, unequal sizes; a seeded subset of
    `max_items` per larger set) and its delete-one jackknife standard error (Arvesen 1969).

    The error is close for different distributions and conservative (≈1.3–1.5× the true spread)
    for equal ones, where the U-statistic is degenerate.
    """
    x, y = _kid_features(feats_a, feats_b)
    if min(len(x), len(y)) < 3:
        raise UsageError(
            f"KID's standard error needs at least 3 samples per set, got {len(x)} and {len(y)}; "
            "pass more samples"
        )
    g = torch.Generator().manual_seed(seed)
    x, y = (t[torch.randperm(len(t), generator=g)[:max_items]] for t in (x, y))
    n, m = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    rx = kxx.sum(1) - kxx.diagonal()  # [n] off-diagonal row sums
    ry = kyy.sum(1) - kyy.diagonal()  # [m]
    cx, cy = kxy.sum(1), kxy.sum(0)  # [n], [m]
    sxx, syy, sxy = rx.sum(), ry.sum(), cx.sum()
    mmd2 = sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    # [n] the estimate without x_i, [m] without y_j
    drop_x = (sxx - 2 * rx) / ((n - 1) * (n - 2)) + syy / (m * (m - 1))
    drop_x = drop_x - 2 * (sxy - cx) / ((n - 1) * m)
    drop_y = sxx / (n * (n - 1)) + (syy - 2 * ry) / ((m - 1) * (m - 2))
    drop_y = drop_y - 2 * (sxy - cy) / (n * (m - 1))
    var = (n - 1) / n * (drop_x - drop_x.mean()).pow(2).sum()
    var = var + (m - 1) / m * (drop_y - drop_y.mean()).pow(2).sum()
    return float(mmd2), float(var.sqrt())


def fd_min_n(dim: int) -> int:
    """The smallest n at which difflab calls a Fréchet distance meaningful: max(2048, 10·dim).

    Two samples of one distribution with Σ ∝ I have E[FD] ≈ ((d + 1)/4 + 1)·(1/n + 1/n_ref)·tr Σ
    (the spread of the sample means and Wishart covariances; tests/test_small_n.py checks it),
    i.e. ≈ (d + 1)/(2n) of the total feature variance at n = n_ref: n ≥ 10·d keeps that bias near
    5 %. 2048 is the floor pytorch-fid recommends (a full-rank covariance of Inception's 2048-d
    features). KID has no such bias at any n (Bińkowski 2018 §3).
    """
    return max(2048, 10 * int(dim))


# ---------------------------------------------------------------- Inception Score


def _check_probs(probs: ArrayLike, what: str = "probs") -> np.ndarray:
    p = _as_f64(probs, what, 2)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise UsageError(
            f"{what} must hold class probabilities (non-negative rows summing to 1); "
            "apply a softmax to the logits"
        )
    return p


def inception_score(probs: ArrayLike, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) ‖ p(y)), mean and std over splits (Salimans 2016 §4)."""
    p = _check_probs(probs)  # [N, K]
    n = p.shape[0]
    if not isinstance(splits, int) or splits < 1 or n < splits:
        raise UsageError(
            f"inception_score got {n} samples for splits={splits}; pass at least one sample "
            "per split or lower splits"
        )
    size = n // splits
    scores = []
    for i in range(splits):
        part = p[i * size : (i + 1) * size]  # [n/splits, K]
        py = part.mean(axis=0, keepdims=True)  # [1, K] marginal p(y)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(axis=1)  # [n]
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------- precision / recall


def _pairwise_dist(x: Tensor, y: Tensor, batch_size: int):
    """Yield (row slice, Euclidean distances [b, M]) for row batches of x against all of y."""
    for i in range(0, x.shape[0], batch_size):
        yield slice(i, i + batch_size), torch.cdist(x[i : i + batch_size], y)  # [b, M]


def _knn_radii(x: Tensor, k: int, batch_size: int) -> Tensor:
    """Distance of every row of x to its k-th nearest other row (Kynkäänniemi 2019 §2)."""
    radii = torch.empty(x.shape[0], dtype=x.dtype)
    for rows, d in _pairwise_dist(x, x, batch_size):
        radii[rows] = d.kthvalue(k + 1, dim=1).values  # k + 1: the point itself is at 0
    return radii  # [N]


def _coverage(radii: Tensor, manifold: Tensor, queries: Tensor, batch_size: int) -> float:
    """Fraction of queries inside at least one k-NN ball of the manifold points."""
    inside = torch.empty(queries.shape[0], dtype=torch.bool)
    for rows, d in _pairwise_dist(queries, manifold, batch_size):
        inside[rows] = (d <= radii[None]).any(dim=1)  # [b]
    return float(inside.double().mean())


def precision_recall(
    real: ArrayLike, fake: ArrayLike, k: int = 3, *, batch_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall with k-NN manifold estimates (Kynkäänniemi 2019 eq. 1–2).

    Distances are computed in float64 for float64 inputs, otherwise in float32.
    """
    tensors = []
    for x, what in ((real, "real"), (fake, "fake")):
        x = torch.as_tensor(x).detach().cpu()
        if x.ndim != 2:
            raise UsageError(f"{what} features must be [N, D], got shape {tuple(x.shape)}")
        tensors.append(x.double() if x.dtype == torch.float64 else x.float())
    r, f = tensors
    dtype = torch.promote_types(r.dtype, f.dtype)
    r, f = r.to(dtype), f.to(dtype)
    if r.shape[1] != f.shape[1]:
        raise UsageError(
            f"precision/recall needs features of equal width, got {r.shape[1]} and "
            f"{f.shape[1]}; use the same feature network for both sets"
        )
    if not isinstance(k, int) or k < 1 or min(len(r), len(f)) <= k:
        raise UsageError(
            f"precision/recall with k={k} needs more than k samples per set, got {len(r)} real "
            f"and {len(f)} fake; pass more samples or a smaller k"
        )
    precision = _coverage(_knn_radii(r, k, batch_size), r, f, batch_size)
    recall = _coverage(_knn_radii(f, k, batch_size), f, r, batch_size)
    return precision, recall


# ---------------------------------------------------------------- classifier accuracy


def classifier_accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of samples whose most probable class is their label (class-conditional fidelity)."""
    p = _as_f64(probs, "probs", 2)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, Tensor) else labels)
    if y.shape != (p.shape[0],) or y.dtype.kind not in "iu":
        raise UsageError(
            f"labels must be integers of shape [{p.shape[0]}], got {y.dtype} {y.shape}; "
            "pass one class index per sample"
        )
    if len(y) == 0:
        raise UsageError("classifier_accuracy got no samples; pass at least one")
    return float((p.argmax(axis=1) == y).mean())


def psnr(a: Tensor, b: Tensor) -> float:
    """Peak signal-to-noise ratio 10·log10(255² / MSE) of two uint8 image batches, in dB."""
    mse = (a.double() - b.double()).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)
