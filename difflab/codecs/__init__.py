"""Codecs between pixels and model space (base: the protocol and registry; one file per codec)."""

from difflab.codecs import diffusers_vae, identity, kl, vq  # noqa: F401  (register the codecs)
from difflab.codecs.base import CODECS, Codec, build_codec, codec_spec

__all__ = ["CODECS", "Codec", "build_codec", "codec_spec"]
