"""Are self-supervised domain features useful without labels? k-NN and linear-probe accuracy of
three feature nets on Fashion-MNIST, measured in the same run: random init, SimCLR (no labels),
supervised (labels).

    python bench/feature_probe.py [--ssl-steps 400] [--sup-steps 200] [--limit 6000] [--size 16]

Each net trains on the first `limit` train images (SimCLR without their labels); probes fit on
5000 train features and score on 2000 test features: cosine k-NN (k = 20, majority vote) and a
logistic-regression linear probe on standardised features (the protocol of SimCLR §4, small).
Prints one line per net and the SimCLR / random ratio of each accuracy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from difflab.data.datasets import load_dataset
from difflab.evaluation.feature_training import train_feature_net
from difflab.evaluation.features import DomainNet, extract, load_feature_net


def knn_accuracy(f_train, y_train, f_test, y_test, k: int = 20) -> float:
    """Majority vote of the k nearest train features by cosine similarity."""
    a = torch.nn.functional.normalize(torch.as_tensor(f_train), dim=1)
    b = torch.nn.functional.normalize(torch.as_tensor(f_test), dim=1)
    idx = (b @ a.T).topk(k, dim=1).indices  # [M, k]
    votes = torch.as_tensor(y_train)[idx]  # [M, k]
    pred = torch.mode(votes, dim=1).values
    return float((pred == torch.as_tensor(y_test)).double().mean())


def linear_probe(f_train, y_train, f_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(f_train)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(f_train), y_train)
    return float(clf.score(scaler.transform(f_test), y_test))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ssl-steps", type=int, default=400)
    p.add_argument("--sup-steps", type=int, default=200)
    p.add_argument("--limit", type=int, default=6000)
    p.add_argument("--size", type=int, default=16)
    args = p.parse_args()
    spec = {"name": "fashion_mnist", "size": args.size, "resize": "bilinear"}
    train = load_dataset({**spec, "limit": 5000})
    test = load_dataset({**spec, "split": "test", "limit": 2000})
    tmp = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    nets = {"random init": DomainNet(in_channels=1, size=[args.size] * 2, num_classes=0,
                                     dataset=spec).eval().requires_grad_(False)}  # fmt: skip
    for name, objective, steps in (("simclr", "simclr", args.ssl_steps),
                                   ("supervised", "classification", args.sup_steps)):  # fmt: skip
        start = time.perf_counter()
        path = train_feature_net({**spec, "limit": args.limit}, steps=steps, objective=objective,
                                 out_path=tmp / f"{name}.safetensors")  # fmt: skip
        nets[f"{name} ({steps} steps)"] = load_feature_net({"name": "domain", "path": str(path)})
        print(f"trained {name}: {time.perf_counter() - start:.0f} s", flush=True)
    results = {}
    for name, net in nets.items():
        f_tr = extract(net, train.x, batch_size=500)[0]  # [5000, D]
        f_te = extract(net, test.x, batch_size=500)[0]  # [2000, D]
        y_tr, y_te = train.labels.numpy(), test.labels.numpy()
        results[name] = (knn_accuracy(f_tr, y_tr, f_te, y_te),
                         linear_probe(f_tr.numpy(), y_tr, f_te.numpy(), y_te))  # fmt: skip
        print(f"{name:28s} kNN {results[name][0]:.3f}  linear probe {results[name][1]:.3f}")
    ssl = next(v for k, v in results.items() if k.startswith("simclr"))
    rnd = results["random init"]
    print(f"simclr / random init: kNN ×{ssl[0] / rnd[0]:.3f}, linear probe ×{ssl[1] / rnd[1]:.3f}")


if __name__ == "__main__":
    main()
