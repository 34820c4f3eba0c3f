"""Things the install step provides: a test that needs one FAILS (never skips) and says how to install it."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

from difflab.data.datasets import FASHION_MNIST_ROOT

SETUP = "`make test` installs everything the tests need"


def require_module(name: str) -> ModuleType:
    """Import a test dependency (pyproject's `test` extra), or fail naming the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        pytest.fail(f"{name} is not installed ({err}): run `pip install -e '.[test]'`; {SETUP}",
                    pytrace=False)  # fmt: skip


def require_fashion_mnist() -> Path:
    """The Debian package dataset-fashion-mnist's files, or fail naming the apt-get command."""
    root = Path(FASHION_MNIST_ROOT)
    files = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    if not all((root / f).is_file() or (root / f"{f}.gz").is_file() for f in files):
        pytest.fail(f"Fashion-MNIST not found in {root}: run `sudo apt-get install "
                    f"dataset-fashion-mnist`; {SETUP}", pytrace=False)  # fmt: skip
    return root


def require_emoji() -> None:
    """The emoji font (fonts-noto-color-emoji) and Unicode's emoji list (unicode-data), or fail
    naming the apt-get command."""
    from difflab.data.emoji import EMOJI_FONT, EMOJI_TEST

    missing = [p for p in (EMOJI_FONT, EMOJI_TEST) if not Path(p).is_file()]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: run `sudo apt-get install fonts-noto-color-emoji "
                    f"unicode-data`; {SETUP}", pytrace=False)  # fmt: skip
