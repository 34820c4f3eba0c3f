"""Closed-form oracles: Gaussian data N(μ, s²) per dimension has an exact denoiser and ODE solution."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from difflab.core.precond import Precond


class GaussianData:
    """x0 ~ N(μ, s²) independently per dimension."""

    def __init__(self, mu: float = 0.3, s: float = 0.5):
        self.mu, self.s = mu, s

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x0 + σε = x] = μ + s²/(s² + σ²)·(x − μ)."""
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return self.mu + self.s**2 / (self.s**2 + sigma**2) * (x - self.mu)

    def ode_solution(self, x1: Tensor, sigma1: float, sigma: float) -> Tensor:
        """Probability-flow ODE from σ₁ to σ: μ + (x₁ − μ)·√(s² + σ²)/√(s² + σ₁²)."""
        return self.mu + (x1 - self.mu) * ((self.s**2 + sigma**2) / (self.s**2 + sigma1**2)) ** 0.5

    def sample(self, shape, generator=None) -> Tensor:
        return self.mu + self.s * torch.randn(shape, generator=generator, dtype=torch.float64)


class PerfectNet(nn.Module):
    """F_θ that makes Precond's D exact: F = (D* − c_skip·x)/c_out, recovering σ from its inputs."""

    def __init__(self, data: GaussianData, sigma_of: callable):
        super().__init__()
        self.data = data
        self.sigma_of = sigma_of  # c_noise → σ, supplied by the test for each parameterization
        self.precond: Precond | None = None

    def forward(self, x_in: Tensor, c_noise: Tensor, cond: dict) -> Tensor:
        sigma = self.sigma_of(c_noise)
        s = self.precond.scalings(sigma)
        x = x_in / _b(s.c_in, x_in)
        return (self.data.denoise(x, sigma) - _b(s.c_skip, x) * x) / _b(s.c_out, x)


def _b(c: Tensor, x: Tensor) -> Tensor:
    return c.reshape(-1, *([1] * (x.ndim - 1)))


def perfect_denoiser(data: GaussianData, schedule, parameterization: str) -> Precond:
    """Precond wrapping a PerfectNet; σ is recovered from c_noise by the matching inverse."""
    if parameterization == "edm":

        def sigma_of(c):
            return (4 * c).exp()
    elif schedule.name == "ve":

        def sigma_of(c):
            return 2 * c.exp()
    elif schedule.name == "edm":

        def sigma_of(c):
            return (4 * c).exp()
    elif schedule.name == "flow":

        def sigma_of(c):
            t = c / 1000
            return t / (1 - t)
    else:

        def sigma_of(c):
            return schedule.t_to_sigma(c).to(c.dtype)

    net = PerfectNet(data, sigma_of)
    pre = Precond(net, schedule, parameterization)
    net.precond = pre
    return pre


def float64_default():
    """Context: float64 as the default dtype (restored afterwards)."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            torch.set_default_dtype(old)

    return ctx()


def sample_from_gaussian_oracle(name: str, sigmas: Tensor, shape=(20000,), **opts) -> Tensor:
    """Run sampler `name` driven by the exact denoiser of N(0.3, 0.5²) from pure noise at σ₀."""
    from difflab.samplers.base import sample

    data = GaussianData(mu=0.3, s=0.5)
    g = torch.Generator().manual_seed(0)
    x = sigmas[0] * torch.randn(shape, generator=g, dtype=torch.float64)
    noise = lambda like: torch.randn(like.shape, generator=g, dtype=like.dtype)  # noqa: E731
    return sample(name, data.denoise, x, sigmas, noise=noise, **opts)


class GaussianMixture:
    """x0 ~ Σ_k π_k N(μ_k, s²·I) in D dims: exact denoiser and exact p(k | x_σ) at every σ."""

    def __init__(self, means: Tensor, s: float, weights: Tensor | None = None):
        self.means = means.to(torch.float64)  # [K, D]
        self.s = s
        k = len(means)
        self.weights = torch.full((k,), 1 / k, dtype=torch.float64) if weights is None else weights

    def _v(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Per-sample variance s² + σ² of each component convolved with N(0, σ²): [B, 1]."""
        return (self.s**2 + sigma.to(x.dtype) ** 2).reshape(-1, 1)

    def log_posterior(self, x: Tensor, sigma: Tensor) -> Tensor:
        """log p(k | x_σ) [B, K]: softmax_k(log π_k − ‖x − μ_k‖²/(2(s² + σ²)))."""
        d2 = (x[:, None, :] - self.means.to(x)).pow(2).sum(-1)  # [B, K]
        return (self.weights.to(x).log() - d2 / (2 * self._v(x, sigma))).log_softmax(-1)

    def component_denoise(self, x: Tensor, sigma: Tensor, k: Tensor) -> Tensor:
        """E[x0 | x_σ, k] = μ_k + s²/(s² + σ²)·(x − μ_k); k [B]."""
        mu = self.means.to(x)[k]  # [B, D]
        return mu + self.s**2 / self._v(x, sigma) * (x - mu)

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x_σ] = Σ_k p(k | x_σ)·E[x0 | x_σ, k]."""
        r = self.log_posterior(x, sigma).exp()  # [B, K]
        mu = self.means.to(x)  # [K, D]
        per = mu[None] + self.s**2 / self._v(x, sigma)[:, :, None] * (x[:, None] - mu[None])
        return (r[:, :, None] * per).sum(1)  # [B, D]

    def grad_log_prob(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        """∇_x log p(y | x_σ) = (μ_y − Σ_k p(k | x_σ)·μ_k)/(s² + σ²), closed form."""
        r = self.log_posterior(x, sigma).exp()  # [B, K]
        mu = self.means.to(x)  # [K, D]
        return (mu[labels] - r @ mu) / self._v(x, sigma)  # [B, D]

    def log_prob(self, x: Tensor, sigma: Tensor, labels: Tensor) -> Tensor:
        """log p(y | x_σ) [B]: the noise-aware classifier duck type of difflab.guidance."""
        return self.log_posterior(x, sigma).gather(1, labels.reshape(-1, 1))[:, 0]

    def check_compatible(self, shape) -> None:
        if tuple(shape)[-1:] != tuple(self.means.shape[1:]):
            from difflab.core.errors import UsageError

            raise UsageError(f"oracle is {self.means.shape[1]}-D, data is {list(shape)}")


class CorrelatedGaussian:
    """x0 ~ N(μ, Σ) in D dims with a full covariance Σ = U·diag(λ)·Uᵀ: exact denoiser and density."""

    def __init__(self, mu: Tensor, cov: Tensor):
        self.mu, self.cov = mu.double(), cov.double()  # [D], [D, D]
        self.lam, self.U = torch.linalg.eigh(self.cov)  # [D], [D, D]

    def sample(self, n: int, generator=None) -> Tensor:
        z = torch.randn((n, len(self.mu)), generator=generator, dtype=torch.float64)
        return self.mu + (z * self.lam.sqrt()) @ self.U.T  # [n, D]

    def denoise(self, x: Tensor, sigma: Tensor) -> Tensor:
        """E[x0 | x0 + σε = x] = μ + Σ(Σ + σ²I)⁻¹(x − μ), per sample σ [B]."""
        gain = self.lam / (self.lam + sigma.double().reshape(-1, 1) ** 2)  # [B, D]
        return (self.mu + ((x.double() - self.mu) @ self.U * gain) @ self.U.T).to(x.dtype)

    def log_prob(self, x: Tensor, sigma: float = 0.0) -> Tensor:
        """log N(x; μ, Σ + σ²I) [B], the exact density of x0 + σε."""
        lam = self.lam + sigma**2
        z = (x.double() - self.mu) @ self.U  # [B, D]
        d = len(self.mu)
        return -0.5 * ((z**2 / lam).sum(1) + lam.log().sum() + d * math.log(2 * math.pi))

    def divergence_integral(self, sigma_min: float, sigma_max: float) -> Tensor:
        """B = ∫ ∂f/∂x d ln σ over [σ_min, σ_max] for f = x − D(x; σ): U·diag(b)·Uᵀ with
        b = ½·ln((λ + σ_max²)/(λ + σ_min²)), since ∂f/∂x = σ²(Σ + σ²I)⁻¹. [D, D]"""
        b = 0.5 * ((self.lam + sigma_max**2) / (self.lam + sigma_min**2)).log()
        return self.U @ torch.diag(b) @ self.U.T


ATOMS = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # the 8-bit grid in [−1, 1]


class PixelGaussian:
    """Each dimension on the 8-bit grid with P(k) = discretised N(μ, s²) mass: exact denoiser."""

    def __init__(self, mu: float = 0.1, s: float = 0.3):
        edges = (ATOMS[:-1] + 1 / 255).numpy()
        cdf = stats.norm(mu, s).cdf(edges)
        mass = torch.from_numpy(np.diff(np.concatenate([[0.0], cdf, [1.0]])))
        self.log_w = mass.clamp(min=1e-300).log()  # [256]

    def sample(self, shape, generator) -> torch.Tensor:
        k = torch.multinomial(self.log_w.exp(), math.prod(shape), True, generator=generator)
        return ATOMS[k].reshape(shape)

    def nll_bits(self, x0: torch.Tensor) -> torch.Tensor:
        k = ((x0 + 1) * 127.5).round().long()
        return -self.log_w[k].mean(1) / math.log(2)  # [B]

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x0 + σε = x] = Σ_k a_k·softmax(log w_k − (x − a_k)²/(2σ²))."""
        s = sigma.double().reshape(-1, *([1] * (x.ndim - 1)), 1)
        logits = self.log_w - (x.double()[..., None] - ATOMS) ** 2 / (2 * s**2)  # [B, D, 256]
        return (logits.softmax(-1) * ATOMS).sum(-1)
