# Two entry points: `make demo` and `make test`. Each installs what it needs: the Debian
# packages below (apt-get, as root or with passwordless sudo), then torch (pinned first, so pip
# never pulls CUDA packages), then difflab with its test extras, behind a stamp file.
PY ?= python3
STAMP := .install.stamp
# Data the tests and the built-in configs read: Fashion-MNIST (/usr/share/datasets/fashion-mnist),
# the Noto colour emoji font the `emoji` dataset renders, and Unicode's emoji-test.txt
# (unicode-data) that names and groups the emoji.
DEB_PACKAGES := dataset-fashion-mnist fonts-noto-color-emoji unicode-data
# Only the tests need these: the web UI's tests load the page in a headless Chromium.
TEST_DEB_PACKAGES := chromium

$(STAMP): pyproject.toml
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

system-packages:
	@.ci/apt-install $(DEB_PACKAGES) $(TEST_DEB_PACKAGES)

install: system-packages $(STAMP)

# The demo trains on scikit-learn's digits: a missing Debian package only warns here.
demo: $(STAMP)
	@.ci/apt-install --warn $(DEB_PACKAGES)
	$(PY) -m difflab demo --out demo-out

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

.PHONY: system-packages install demo test test-slow
