"""Codecs between pixels and model space."""
