"""Networks F_θ(x, c_noise, cond), registered by name in NETS."""

from difflab.nets import classifier, diffusers_unet, mlp, noise_aware, prior, unet  # noqa: F401  (register the nets)
from difflab.nets.base import NETS

__all__ = ["NETS"]
