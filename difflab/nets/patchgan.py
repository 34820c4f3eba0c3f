"""PatchGAN discriminator (Isola et al. 2017, pix2pix §3.2.2; taming `NLayerDiscriminator`): a
stack of stride-2 convolutions whose output is one real/fake logit per overlapping patch."""

from __future__ import annotations

from torch import Tensor, nn

from difflab.nets.layers import group_norm


class PatchDiscriminator(nn.Module):
    """pixels [B, C, H, W] → patch logits [B, 1, h, w] (GroupNorm where taming has BatchNorm, so
    a batch of fakes and a batch of reals are judged alike)."""

    def __init__(self, *, in_channels: int, width: int = 32, layers: int = 2):
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers + 1):
            cout = width * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [nn.Conv2d(ch, cout, 4, stride, 1), group_norm(cout), nn.LeakyReLU(0.2)]
            ch = cout
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.main = nn.Sequential(*mods)
        for m in self.modules():  # pix2pix initialisation N(0, 0.02)
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)  # [B, 1, h, w]
