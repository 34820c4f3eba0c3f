"""The latent text-to-image emoji config resolves through a codec file (`difflab train --dry-run`)."""

from __future__ import annotations

import tomllib
import torch
from requires import require_emoji

from difflab.cli.main import main
from difflab.data.emoji import EMOJI_TEST, read_emoji_test
from difflab.storage.codecs import build_codec, file_sha256, save_codec

KL = {"name": "kl", "channels": 3, "factor": 4, "z_channels": 4, "net": {"ch": 8}}


def small_list(path):
    """An emoji-test.txt with the first three emoji of each group (renders in a blink)."""
    lines, left = [], 0
    for line in open(EMOJI_TEST, encoding="utf-8"):
        if line.startswith("# group:"):
            left = 3
            lines.append(line)
        elif "; fully-qualified" in line and left:
            left -= 1
            lines.append(line)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_emoji_latent_text_resolves_to_a_latent_net(tmp_path, capsys, monkeypatch):
    """64×64×3 pixels through an f=4 codec: the saved config names the codec by hash, the text
    condition names every emoji, and the net builds at the latent levels 16, 8, 4 (attention at
    8 and 4 would not be a level of the 64×64 pixel net)."""
    require_emoji()
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    names = small_list(tmp_path / "emoji-test.txt")
    torch.manual_seed(0)
    codec = build_codec(KL)
    codec.calibrate([torch.rand(8, 3, 64, 64) * 2 - 1])
    path = save_codec(tmp_path / "ae.safetensors", codec, KL, (3, 64, 64))
    data = f"{{name='emoji', split='all', size=64, label='name', emoji_test='{names}'}}"
    argv = ["train", "emoji_latent_text", "--out", str(tmp_path / "run"), "--dry-run",
            "--set", f"model.codec={{ckpt='{path}'}}", "--set", f"data.dataset={data}"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    cfg = tomllib.loads(printed.split("# parameters")[0])
    assert cfg["model"]["shape"] == [3, 64, 64]
    assert cfg["model"]["codec"]["sha256"] == file_sha256(path)
    assert cfg["model"]["schedule"]["name"] == "scaled_linear"
    cond = cfg["model"]["cond"]
    expected = [e.name for e in read_emoji_test(names)]
    assert cond["name"] == "text" and cond["dim"] == 384
    kept = cond["class_names"]  # the font draws most of them as one glyph
    assert len(kept) == len(set(kept)) >= 20 and set(kept) <= set(expected)
    assert not (tmp_path / "run").exists()
