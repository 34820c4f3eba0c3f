"""Networks F_θ(x, c_noise, cond), registered by name in NETS."""

from difflab.core.registry import Registry

NETS = Registry("net")
