"""Tests for difflab.metrics, difflab.features and difflab.evaluate: closed forms and peers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from requires import require_module
from safetensors.torch import save_file

from difflab.core.errors import UsageError
from difflab.data.datasets import load_dataset
from difflab.evaluation.evaluate import evaluate, load_ref, reference_stats, save_ref
from difflab.evaluation.feature_training import train_feature_net
from difflab.evaluation.features import (
    FEATURES,
    INCEPTION_ENV,
    INCEPTION_FILE,
    DomainNet,
    InceptionV3,
    extract,
    load_feature_net,
    metric_name,
)
from difflab.evaluation.metrics import (
    classifier_accuracy,
    feature_stats,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine two threads contend and run slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)  # [D, D] SPD


# ---------------------------------------------------------------- Fréchet distance


def test_fd_closed_form_commuting():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    expected = ((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]  # shared eigenbasis: commuting covariances
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fd_matches_scipy_sqrtm():
    linalg = require_module("scipy.linalg")
    rng = np.random.default_rng(1)
    for d in (3, 20):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
        covmean = linalg.sqrtm(s1 @ s2).real
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
        got = frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2)
        assert got == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_fd_self_is_zero_and_singular_is_stable():
    rng = np.random.default_rng(2)
    mu, sigma = feature_stats(rng.standard_normal((500, 16)))
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    low_rank = rng.standard_normal((16, 3))
    s = low_rank @ low_rank.T  # [16, 16] rank 3
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(mu, s, mu, 0 * s) == pytest.approx(np.trace(s), rel=1e-9)


def test_feature_stats_needs_more_samples_than_dims():
    with pytest.raises(UsageError, match="samples"):
        feature_stats(np.zeros((10, 10)))
    with pytest.raises(UsageError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# ---------------------------------------------------------------- KID


def _kid_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (aᵀb/d + 1)³, written as plain loops."""
    m, d = x.shape
    k = lambda a, b: (float(a @ b) / d + 1.0) ** 3
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return kxx + kyy - 2 * kxy


def test_kid_identical_shifted_and_reference():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((400, 8))
    same, _ = kid(x, x, subsets=20, subset_size=200)
    shifted, _ = kid(x, x + 1.0, subsets=20, subset_size=200)
    assert shifted > 0.5 and abs(same) < 0.02 * shifted
    a, b = rng.standard_normal((25, 5)), rng.standard_normal((25, 5)) + 0.3
    mean, std = kid(a, b, subsets=1, subset_size=1000)  # one subset = the whole sets
    assert mean == pytest.approx(_kid_reference(a, b), rel=1e-10) and std == 0.0
    with pytest.raises(UsageError, match="at least 2"):
        kid(a[:1], b)


# ---------------------------------------------------------------- Inception Score


def test_inception_score_bounds():
    k = 10
    mean, std = inception_score(np.full((100, k), 1.0 / k))
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)
    one_hot = np.eye(k)[np.arange(100) % k]  # every split holds every class once
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(UsageError):
        inception_score(np.full((5, k), 0.5))  # rows do not sum to 1
    with pytest.raises(UsageError):
        inception_score(np.full((5, k), 0.1), splits=10)


# ---------------------------------------------------------------- precision / recall


def _pr_reference(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    precision = (dist(fake, real) <= r_real[None]).any(1).mean()
    recall = (dist(real, fake) <= r_fake[None]).any(1).mean()
    return precision, recall


def test_precision_recall():
    rng = np.random.default_rng(4)
    real = rng.standard_normal((300, 4))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    assert precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
    fake = 1.3 * rng.standard_normal((250, 4)) + 0.4
    expected = _pr_reference(real, fake, 3)
    assert precision_recall(real, fake, k=3, batch_size=64) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1
    with pytest.raises(UsageError, match="more than k"):
        precision_recall(real[:3], fake, k=3)


def test_classifier_accuracy():
    probs = np.eye(3)[[0, 1, 2, 2]]
    assert classifier_accuracy(probs, np.array([0, 1, 2, 0])) == 0.75
    with pytest.raises(UsageError):
        classifier_accuracy(probs, np.array([0, 1]))


# ---------------------------------------------------------------- Inception


@pytest.fixture(scope="module")
def inception_files(tmp_path_factory):
    """A randomly initialised FID Inception saved as .safetensors and as a plain-state-dict .pth."""
    torch.manual_seed(0)
    net = InceptionV3()
    for m in net.modules():  # non-trivial BN statistics so every weight matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    sd = net.state_dict()
    folder = tmp_path_factory.mktemp("inception")
    save_file({k: v for k, v in sd.items() if "num_batches" not in k}, folder / "w.safetensors")
    torch.save(dict(sd), folder / "w.pth")
    return net, folder


def test_inception_loads_both_formats_identically(inception_files, monkeypatch):
    net, folder = inception_files
    # pytorch-fid's state dict names (torchvision Inception3 with FID blocks, 1008-way fc)
    sd = net.state_dict()
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_7c.branch3x3dbl_3b.bn.running_var"].shape == (384,)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["fc.weight"].shape == (1008, 2048)
    # torchvision's Inception3 without aux logits has 23,834,568 parameters at 1000 classes
    assert sum(p.numel() for p in net.parameters()) == 23_834_568 + 8 * 2049
    a = load_feature_net({"name": "inception", "weights": str(folder / "w.safetensors")})
    b = load_feature_net({"name": "inception", "weights": str(folder / "w.pth")})
    monkeypatch.setenv(INCEPTION_ENV, str(folder / "w.pth"))
    c = FEATURES.build("inception")
    assert a.hash == b.hash == c.hash == net.hash
    x = torch.randint(0, 256, (2, 3, 40, 32), dtype=torch.uint8, generator=torch.Generator())
    x[1] = x[1, :1]  # a grey image stored as RGB
    fa, pa = extract(a, x, with_probs=True)
    fb = b(x)
    assert fa.shape == (2, 2048) and pa.shape == (2, 1008) and torch.isfinite(fa).all()
    assert torch.equal(fa, fb) and fa.std() > 0
    grey = a(x[1:, :1])  # [1, 2048]: grayscale is repeated to 3 channels
    torch.testing.assert_close(grey[0], fa[1], rtol=1e-4, atol=1e-6)
    assert metric_name(a) == "FID"


def test_inception_bad_weights(inception_files, tmp_path, monkeypatch):
    _, folder = inception_files
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    with pytest.raises(UsageError, match=INCEPTION_FILE):
        FEATURES.build("inception")
    with pytest.raises(UsageError, match=INCEPTION_FILE):
        FEATURES.build({"name": "inception", "weights": str(tmp_path / "missing.pth")})
    wrong = DomainNet(in_channels=1, size=[8, 8], num_classes=10).state_dict()
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(UsageError, match="not the FID Inception state dict"):
        FEATURES.build({"name": "inception", "weights": str(tmp_path / "wrong.pth")})
    sd = torch.load(folder / "w.pth", weights_only=True)
    sd["fc.weight"] = sd["fc.weight"][:1000]  # torchvision's 1000-class head
    save_file({k: v for k, v in sd.items()}, tmp_path / "wrong.safetensors")
    with pytest.raises(UsageError, match="shape: fc.weight"):
        FEATURES.build({"name": "inception", "weights": str(tmp_path / "wrong.safetensors")})
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled object, not weights
    with pytest.raises(UsageError, match="not a plain PyTorch state dict"):
        FEATURES.build({"name": "inception", "weights": str(tmp_path / "module.pth")})


# ---------------------------------------------------------------- domain net and evaluate


@pytest.fixture(scope="module")
def domain_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("domain") / "digits-features.safetensors"
    return train_feature_net({"name": "digits"}, steps=60, batch_size=64, seed=0, out_path=path)


def test_domain_net_trains_and_reloads(domain_file):
    a = load_feature_net({"name": "domain", "path": str(domain_file)})
    b = load_feature_net({"name": "domain", "path": str(domain_file)})
    assert a.info["test_accuracy"] > 0.6  # chance is 0.1
    data = load_dataset({"name": "digits"})
    fa, pa = extract(a, data.x[:300], with_probs=True)
    assert fa.shape == (300, 128) and torch.equal(fa, b(data.x[:300]))
    assert torch.allclose(pa.sum(1), torch.ones(300))
    assert classifier_accuracy(pa, data.labels[:300]) > 0.6
    assert a.hash == b.hash and metric_name(a) == "FD-digits"
    with pytest.raises(UsageError, match="trained on uint8 images"):
        a(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_evaluate_and_reference_round_trip(domain_file, tmp_path):
    net = load_feature_net({"name": "domain", "path": str(domain_file)})
    ref = reference_stats({"name": "digits"}, net, n=1000)
    save_ref(tmp_path / "ref.npz", ref)
    loaded = load_ref(tmp_path / "ref.npz")
    assert loaded["feature_hash"] == net.hash and loaded["n"] == 1000
    assert loaded["feature_config"]["dataset"] == {"name": "digits"}
    assert np.array_equal(loaded["sigma"], ref["sigma"])
    data = load_dataset({"name": "digits"})
    out = evaluate(
        data.x[-600:],
        loaded,
        net,
        ("fd", "kid", "is", "pr", "acc"),
        labels=data.labels[-600:],
        kid_subsets=10,
        kid_subset_size=200,
    )
    assert out["n"] == 600 and out["fd_name"] == "FD-digits" and out["feature_hash"] == net.hash
    assert out["fd"] >= 0 and out["precision"] > 0.5 and out["recall"] > 0.5
    assert 1 < out["is_mean"] <= 10 and out["accuracy"] > 0.6
    noise = torch.randint(0, 256, (600, 1, 8, 8), dtype=torch.uint8)
    worse = evaluate(noise, loaded, net, ("fd", "kid"), kid_subsets=10, kid_subset_size=200)
    assert worse["fd"] > out["fd"] and worse["kid_mean"] > out["kid_mean"]


def test_evaluate_bad_input(domain_file, tmp_path):
    raw = load_feature_net("raw")
    ref = reference_stats({"name": "digits"}, raw)
    images = load_dataset({"name": "digits"}).x[:200]
    out = evaluate(images, ref, raw, ("fd", "pr"))
    assert out["fd_name"] == "FD-raw" and out["fd"] >= 0
    net = load_feature_net({"name": "domain", "path": str(domain_file)})
    with pytest.raises(UsageError, match="recompute the reference"):
        evaluate(images, ref, net)
    with pytest.raises(UsageError, match="no images"):
        evaluate(images[:0], ref, raw)
    with pytest.raises(UsageError, match="shape"):
        evaluate(torch.zeros(200, 3, 8, 8, dtype=torch.uint8), ref, raw)
    with pytest.raises(UsageError, match="unknown metric"):
        evaluate(images, ref, raw, ("fid",))
    with pytest.raises(UsageError, match="no classifier head"):
        evaluate(images, ref, raw, ("is",))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a difflab reference"):
        load_ref(tmp_path / "junk.npz")


def test_reference_from_folder_and_points(tmp_path):
    from PIL import Image

    from difflab.evaluation.evaluate import images_from_folder

    rng = np.random.default_rng(5)
    for i in range(60):
        Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    raw = load_feature_net("raw")
    ref = reference_stats(tmp_path, raw)
    images = images_from_folder(tmp_path)
    assert images.shape == (60, 3, 4, 4) and ref["n"] == 60
    assert evaluate(images, ref, raw, ("fd",))["fd"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(UsageError, match="neither an image folder nor a dataset"):
        reference_stats(str(tmp_path / "nope"), raw)
    ref = reference_stats({"name": "gaussian_mixture", "n": 2000}, raw, n=1000)
    pts = load_dataset({"name": "gaussian_mixture", "n": 1000, "seed": 1}).x
    out = evaluate(pts, ref, raw, ("fd", "kid", "pr"), kid_subsets=5, kid_subset_size=200)
    assert out["fd"] < 0.05 and out["precision"] > 0.9 and out["recall"] > 0.9
