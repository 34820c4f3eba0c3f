"""Networks F_θ(x, c_noise, cond), registered by name in NETS."""

from difflab.registry import Registry

NETS = Registry("net")

from difflab.nets import classifier, mlp, unet  # noqa: E402, F401  (register the nets)
