"""The `emoji` dataset: Unicode names and groups, a fixed disjoint split, RGB glyphs that are
not blank, a cache reused until the font, the list or the options change, and the one-line
error (exit 2 in the CLI) when the font package is missing."""

import shutil

import pytest
import torch
from requires import require_emoji

from difflab.cli.main import main
from difflab.conditioning import text as text_module
from difflab.conditioning.base import CONDITIONERS
from difflab.conditioning.captions import captions
from difflab.core.errors import UsageError
from difflab.data import emoji as emoji_module
from difflab.data import load_dataset
from difflab.data.emoji import EMOJI_FONT, EMOJI_GROUPS, EMOJI_TEST, is_held_out, read_emoji_test


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """DIFFLAB_CACHE pointed at a fresh folder for this module; the 32 px set rendered once."""
    require_emoji()
    folder = tmp_path_factory.mktemp("emoji_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DIFFLAB_CACHE", str(folder))
        load_dataset({"name": "emoji", "split": "all"})
        yield folder


def emoji(**options):
    return load_dataset({"name": "emoji", **options})


def test_names_and_groups_come_from_unicode(cache):
    table = {e.name: e for e in read_emoji_test(EMOJI_TEST)}
    expected = {"red apple": ("Food & Drink", "1F34E"), "parrot": ("Animals & Nature", "1F99C"),
                "sneezing face": ("Smileys & Emotion", "1F927"),
                "flag: japan": ("Flags", "1F1EF 1F1F5"), "keycap: 1": ("Symbols", "0031 FE0F 20E3"),
                "family: man, woman, boy": ("People & Body", "1F468 200D 1F469 200D 1F466"),
                }  # fmt: skip
    for name, (group, codes) in expected.items():
        assert (table[name].group, table[name].codepoints) == (group, codes), name
    assert not any("skin tone" in n for n in table)  # variants only with skin_tones=True
    assert len(read_emoji_test(EMOJI_TEST, skin_tones=True)) > 1.5 * len(table)
    data = emoji(split="all")
    assert data.class_names == list(EMOJI_GROUPS) and len(data) > 1800
    assert torch.bincount(data.labels, minlength=9).min() > 50  # every group well populated
    i = data.meta["names"].index("red apple")
    assert EMOJI_GROUPS[data.labels[i]] == "Food & Drink" and data.meta["codepoints"][i] == "1F34E"
    named = emoji(split="all", label="name")
    assert named.class_names == data.meta["names"] and named.class_names[i] == "red apple"
    assert torch.equal(named.labels, torch.arange(len(named)))
    assert torch.equal(named.meta["groups"], data.labels)
    assert len(set(named.class_names)) == len(named)


def test_split_is_fixed_and_disjoint(cache):
    every = emoji(split="all").meta["codepoints"]
    train, test = (emoji(split=s).meta["codepoints"] for s in ("train", "test"))
    assert not set(train) & set(test) and sorted(train + test) == sorted(every)
    assert 0.07 < len(test) / len(every) < 0.13
    # golden: a hash of the code points, not an RNG or the position in the list
    assert [c for c in every if is_held_out(c)][:4] == ["1F602", "1F609", "1F617", "263A FE0F"]
    assert test == emoji(split="test").meta["codepoints"]


def test_images_are_rgb_glyphs_on_the_background(cache):
    data = emoji(split="all")
    x, mask = data.x, data.meta["mask"]  # [N, 3, 32, 32], [N, 1, 32, 32]
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32) and mask.shape[1:] == (1, 32, 32)
    assert (mask.flatten(1).amax(1) == 255).all()  # every glyph drawn, none blank
    assert ((x < 230).flatten(1).any(1)).all()  # and none plain white (the lightest: 203)
    assert (x[:, :, 0, 0] == 255).float().mean() > 0.9  # corners show the white background
    black = emoji(split="all", background="black").x
    assert (black[mask.expand_as(black) == 0] == 0).all()
    opaque = mask.expand_as(x) == 255
    assert torch.equal(black[opaque], x[opaque])  # the background shows only through alpha


def test_limit_spreads_over_every_group(cache):
    data = emoji(split="all", limit=27)
    assert len(data) == 27 and set(data.labels.tolist()) == set(range(9))


@pytest.fixture
def small_list(tmp_path):
    """An emoji-test.txt of three groups, a few emoji each (renders in a blink)."""
    keep, lines = 0, []
    for line in open(EMOJI_TEST, encoding="utf-8"):
        if line.startswith("# group:"):
            keep = 4 if any(g in line for g in ("Smileys", "Food", "Flags")) else 0
            lines.append(line)
        elif "; fully-qualified" in line and keep:
            keep -= 1
            lines.append(line)
    path = tmp_path / "emoji-test.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_cache_is_reused_and_rebuilt_when_inputs_change(small_list, tmp_path, monkeypatch):
    require_emoji()
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "cache"))
    font = tmp_path / "font.ttf"
    shutil.copy(EMOJI_FONT, font)
    spec = {"name": "emoji", "split": "all", "size": 16, "font": str(font),
            "emoji_test": str(small_list)}  # fmt: skip
    renders = []
    real = emoji_module.render_emoji
    monkeypatch.setattr(emoji_module, "render_emoji",
                        lambda *a: renders.append(a[2]) or real(*a))  # fmt: skip
    first = load_dataset(spec)
    assert first.shape == (3, 16, 16) and len(first) == 12 and renders == [16]
    assert len(list((tmp_path / "cache").iterdir())) == 1

    def refuse(*args):
        raise AssertionError("rendered again")

    monkeypatch.setattr(emoji_module, "render_emoji", refuse)
    again = load_dataset({**spec, "label": "name", "background": "black"})  # same render
    assert torch.equal(again.meta["mask"], first.meta["mask"])
    monkeypatch.setattr(emoji_module, "render_emoji",
                        lambda *a: renders.append(a[2]) or real(*a))  # fmt: skip
    load_dataset({**spec, "size": 8})  # another size
    with open(font, "ab") as f:
        f.write(b"\0" * 16)  # the font file changed
    before = set((tmp_path / "cache").iterdir())
    load_dataset(spec)
    (new,) = set((tmp_path / "cache").iterdir()) - before
    new.write_bytes(b"not safetensors")  # a damaged cache file is rendered again
    assert len(load_dataset(spec)) == 12
    assert renders == [16, 8, 16, 16]
    assert not list((tmp_path / "cache").glob(".*"))  # no temp files left


def test_missing_font_is_one_line_naming_the_package(tmp_path, capsys):
    with pytest.raises(UsageError) as err:
        emoji(font=str(tmp_path / "nope.ttf"))
    message = str(err.value)
    assert "\n" not in message and "fonts-noto-color-emoji" in message
    assert "apt-get install fonts-noto-color-emoji" in message and "`font`" in message
    run = tmp_path / "run"
    code = main(["train", "emoji_class", "--out", str(run), "--quiet", "--set",
                 f"data.dataset={{name='emoji', font='{tmp_path / 'nope.ttf'}'}}"])  # fmt: skip
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "fonts-noto-color-emoji" in lines[0], lines
    assert not run.exists()


def test_text_conditioner_captions_each_emoji_by_its_name(cache, monkeypatch):
    data = emoji(split="all", label="name", limit=6)
    spec = CONDITIONERS.get("text").resolve({"name": "text", "p_uncond": 0.0}, data, "emoji")
    assert spec["class_names"] == data.class_names
    cond = CONDITIONERS.build(spec)
    table = cond.captions()
    assert table == captions("emoji", data.class_names)
    for name, variants in zip(data.class_names, table):
        assert variants[0] == f"{name.replace('flag: ', 'flag of ').replace(': ', ', ')} emoji"
    got = cond.from_labels(torch.arange(6), generator=torch.Generator().manual_seed(0))
    for k in range(6):  # each item's vector is the encoding of one of its own captions
        own = cond.from_prompts(table[k])["vector"]  # [T, D]
        assert torch.isclose(own, got["vector"][k], atol=1e-5).all(1).any()
    assert cond.class_prompts(torch.tensor([0]))[0] == table[0][0]
    flat = [c for per_class in table for c in per_class]
    monkeypatch.setattr(text_module, "PROMPT_CHUNK", 5)  # 24 captions in 5 encoder calls
    chunked, whole = cond.from_prompts(flat), cond.encoder.encode(flat)
    torch.testing.assert_close(chunked["tokens"], whole["tokens"], atol=1e-5, rtol=0)
    torch.testing.assert_close(chunked["vector"], whole["pooled"], atol=1e-5, rtol=0)


def test_unwritable_cache_is_one_line_naming_the_variable(small_list, tmp_path, monkeypatch):
    require_emoji()
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path / "a_file" / "cache"))
    with pytest.raises(UsageError, match="set DIFFLAB_CACHE to a writable folder"):
        emoji(emoji_test=str(small_list))
