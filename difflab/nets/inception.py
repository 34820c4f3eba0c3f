"""Inception-v3 blocks with the FID graph's quirks (Szegedy et al. 2016; Heusel et al. 2017).

Parameter names follow pytorch-fid so its published weights file loads unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvBN(nn.Module):
    """Conv (no bias) → BatchNorm (eps 1e-3, TF's value) → ReLU; Inception's basic unit."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: Any):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    """3×3 stride-1 average pool whose border averages skip the padding, as TensorFlow's does."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


def _row(cin: int, cout: int, n: int) -> ConvBN:
    return ConvBN(cin, cout, (1, n), padding=(0, n // 2))  # 1×n factorised conv


def _col(cin: int, cout: int, n: int) -> ConvBN:
    return ConvBN(cin, cout, (n, 1), padding=(n // 2, 0))  # n×1 factorised conv


class FIDInceptionA(nn.Module):
    """35×35 module: 1×1, 5×5, double-3×3 and pool towers (Szegedy 2016 fig. 5)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], dim=1)  # [N, 224 + pool, H, W]


class InceptionB(nn.Module):
    """35→17 grid reduction: strided 3×3, strided double-3×3 and max pool (Szegedy 2016 fig. 10)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([self.branch3x3(x), b3, bp], dim=1)  # [N, 480 + cin, H', W']


class FIDInceptionC(nn.Module):
    """17×17 module with factorised 7×7 towers (Szegedy 2016 fig. 6)."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c = channels_7x7
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c, 1)
        self.branch7x7_2 = _row(c, c, 7)
        self.branch7x7_3 = _col(c, 192, 7)
        self.branch7x7dbl_1 = ConvBN(cin, c, 1)
        self.branch7x7dbl_2 = _col(c, c, 7)
        self.branch7x7dbl_3 = _row(c, c, 7)
        self.branch7x7dbl_4 = _col(c, c, 7)
        self.branch7x7dbl_5 = _row(c, 192, 7)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        bp = self.branch_pool(_avg_pool(x))
        return torch.cat([self.branch1x1(x), b7, d, bp], dim=1)  # [N, 768, H, W]


class InceptionD(nn.Module):
    """17→8 grid reduction: strided 3×3, strided 7×7-then-3×3 and max pool (Szegedy 2016 §6)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = _row(192, 192, 7)
        self.branch7x7x3_3 = _col(192, 192, 7)
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        bp = F.max_pool2d(x, 3, stride=2)
        return torch.cat([b3, b7, bp], dim=1)  # [N, 512 + cin, H', W']


class FIDInceptionE(nn.Module):
    """8×8 module with expanded 1×3/3×1 filter banks (Szegedy 2016 fig. 7)."""

    max_pool = False  # the pool tower's pooling: TF average (E_1) or max (E_2)

    def __init__(self, cin: int):
        super().__init__()
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = _row(384, 384, 3)
        self.branch3x3_2b = _col(384, 384, 3)
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _row(384, 384, 3)
        self.branch3x3dbl_3b = _col(384, 384, 3)
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], dim=1)  # [N, 768, H, W]
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], dim=1)  # [N, 768, H, W]
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], dim=1)  # [N, 2048]


class FIDInceptionE_1(FIDInceptionE):  # pytorch-fid's name
    """Mixed_7b: average-pool tower."""


class FIDInceptionE_2(FIDInceptionE):  # pytorch-fid's name
    """Mixed_7c: the TF graph's max-pool tower (kept for FID compatibility)."""

    max_pool = True
