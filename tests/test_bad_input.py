"""Bad-input corpus: each case is one line naming the problem, exit status 2, no traceback, and
nothing overwritten. Runs `difflab.cli.main` in-process (the CLI via subprocess is in test_cli)."""

import gzip
import struct

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from test_train import TINY_UNET

from difflab import train
from difflab.cli.main import main
from difflab.core.config import load_config
from difflab.evaluation.evaluate import reference_stats, save_ref
from difflab.evaluation.features import load_feature_net
from difflab.storage import checkpoint as ckpt


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tree of bad (and a few good) inputs, made once."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty_dir").mkdir()
    (d / "corrupt").mkdir()
    Image.new("L", (8, 8)).save(d / "corrupt" / "good.png")
    (d / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "truncated_img").mkdir()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(d / "truncated_img" / "a.png")
    full = (d / "truncated_img" / "a.png").read_bytes()
    (d / "truncated_img" / "b.png").write_bytes(full[: len(full) // 2])
    (d / "mixed").mkdir()
    Image.new("L", (8, 8)).save(d / "mixed" / "a.png")
    Image.new("L", (9, 9)).save(d / "mixed" / "b.png")
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 10, 28, 28)
    (d / "trunc.idx").write_bytes(header + bytes(100))
    (d / "magic.idx").write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with gzip.open(d / "trunc.idx.gz", "wb") as f:
        f.write(header + bytes(50))
    (d / "zero.safetensors").write_bytes(b"")
    save_file({"w": torch.zeros(3)}, str(d / "foreign.safetensors"))
    (d / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (d / "a_file").write_text("I am a file")
    (d / "nan.toml").write_text("[train]\nlr = nan\n")
    (d / "neg.toml").write_text("[train]\nsteps = -5\n")
    (d / "badkey.toml").write_text("[model]\nparametrization = 'eps'\n")
    (d / "broken.toml").write_text("[train\nlr = 1\n")
    run = d / "run"
    train(load_config("digits", [TINY_UNET, "train.steps=1", "train.batch_size=4"]), run)
    good = ckpt.latest_checkpoint(run)
    # a checkpoint whose config names another net than its weights
    state, config, info = ckpt.load_model_file(good)
    config["model"]["net"] = {"name": "unet", "model_channels": 8, "channel_mult": [1],
                              "attention_resolutions": [], "num_res_blocks": 1}  # fmt: skip
    ckpt.save_model(d / "othernet.safetensors", state, config, info)
    trunc = good.read_bytes()
    (d / "truncated.safetensors").write_bytes(trunc[: len(trunc) // 2])
    (d / "occupied").mkdir()
    (d / "occupied" / "keep.txt").write_text("precious")
    _more_files(d, good)
    return d


def _more_files(d, good):
    """Second pass (issue 20): damaged checkpoints, malformed metadata, existing outputs."""
    data = bytearray(good.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n + (len(data) - 8 - n) // 2] ^= 0x10
    (d / "flipped.safetensors").write_bytes(bytes(data))
    (d / "flipped_run" / "checkpoints").mkdir(parents=True)
    (d / "flipped_run" / "checkpoints" / good.name).write_bytes(bytes(data))
    header = bytearray(good.read_bytes())
    header[20] = ord("\x01")  # a control character inside the JSON header
    (d / "badheader.safetensors").write_bytes(bytes(header))
    state, config, info = ckpt.load_model_file(good)
    next(iter(state.values())).view(-1)[0] = float("nan")
    ckpt.save_model(d / "nan.safetensors", state, config, info)
    for name, text in (("list", "[1, 2]"), ("kind5", '{"kind": 5}'), ("noconfig", '{"kind": "model"}'),
                       ("badjson", "{oops")):  # fmt: skip
        save_file({"w": torch.zeros(2)}, str(d / f"meta_{name}.safetensors"),
                  metadata={"format": ckpt.FORMAT, "difflab": text})  # fmt: skip
    for kind in ("classifier", "feature_net", "codec"):
        ckpt.save_tensors(d / f"{kind}.safetensors", {"w": torch.zeros(2)}, {"kind": kind})
    for name in ("exists.safetensors", "exists.npz", "exists.json", "exists.png"):
        (d / name).write_text("keep me")
    (d / "garbage.npz").write_bytes(b"PK nothing")
    save_ref(d / "ref.npz", reference_stats("digits", load_feature_net("raw"), 200))
    (d / "loose" / "a").mkdir(parents=True)
    (d / "loose" / "b").mkdir()
    for sub in ("a", "b"):
        Image.new("L", (8, 8)).save(d / "loose" / sub / "x.png")
    Image.new("L", (8, 8)).save(d / "loose" / "stray.png")
    (d / "one_class").mkdir()
    for i in range(3):
        Image.new("L", (8, 8), i).save(d / "one_class" / f"{i}.png")
    (d / "strbool.toml").write_text('[data]\nhflip = "false"\n')
    (d / "float.json").write_text('{"train": {"steps": 2.5}}')
    (d / "strsteps.toml").write_text('[train]\nsteps = "100"\n')
    (d / "imgs.idx").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 3, 4, 4) + bytes(48))
    (d / "labels2.idx").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes(2))


def ds(spec: str) -> list[str]:
    return ["--set", f"data.dataset={spec}"]


T = ["train", "digits", "--out", "{d}/new_run"]
S = ["sample", "{d}/run", "--out", "{d}/samples"]
CASES = {
    # data
    "missing folder": (T + ds("{{name='folder', path='{d}/nope'}}"), "does not exist"),
    "empty folder": (T + ds("{{name='folder', path='{d}/empty_dir'}}"), "no images"),
    "corrupt image": (T + ds("{{name='folder', path='{d}/corrupt', channels=1}}"), "bad.png"),
    "truncated image": (T + ds("{{name='folder', path='{d}/truncated_img'}}"), "b.png"),
    "mixed image sizes": (T + ds("{{name='folder', path='{d}/mixed', channels=1}}"), "size"),
    "truncated idx": (T + ds("{{name='idx', images='{d}/trunc.idx'}}"), "trunc.idx"),
    "foreign idx magic": (T + ds("{{name='idx', images='{d}/magic.idx'}}"), "magic"),
    "truncated idx.gz": (T + ds("{{name='idx', images='{d}/trunc.idx.gz'}}"), "trunc.idx.gz"),
    "bad channel count": (T + ds("{{name='folder', path='{d}/corrupt', channels=2}}"), "channels"),
    "unknown dataset": (T + ds("{{name='cifar99'}}"), "unknown dataset 'cifar99'"),
    "unknown dataset option": (T + ds("{{name='digits', colour=1}}"), "no option 'colour'"),
    # configs
    "missing config": (["train", "{d}/none.toml", "--out", "{d}/x"], "not found"),
    "broken toml": (["train", "{d}/broken.toml", "--out", "{d}/x"], "not valid TOML"),
    "nan in config": (["train", "{d}/nan.toml", "--out", "{d}/x"], "train.lr must be a positive"),
    "negative in config": (["train", "{d}/neg.toml", "--out", "{d}/x"], "train.steps must be"),
    "unknown key in file": (
        ["train", "{d}/badkey.toml", "--out", "{d}/x"],
        "'model.parametrization'",
    ),
    "unknown override key": (T + ["--set", "train.lerning_rate=1"], "'train.lerning_rate'"),
    "override not k=v": (T + ["--set", "train.lr"], "not of the form"),
    "unknown net": (T + ["--set", "model.net={{name='vit'}}"], "unknown net 'vit'"),
    "unknown net option": (T + ["--set", "model.net.widht=3"], "no option 'widht'"),
    "unknown schedule": (T + ["--set", "model.schedule={{name='quartic'}}"], "unknown schedule"),
    "unknown parameterization": (
        T + ["--set", "model.parameterization='score'"],
        "unknown parameterization",
    ),
    "unknown density": (
        T + ["--set", "train.sigma_density={{name='beta'}}"],
        "unknown sigma density",
    ),
    "bad nonfinite policy": (T + ["--set", "train.on_nonfinite='ignore'"], "on_nonfinite"),
    "ema decay out of range": (T + ["--set", "train.ema_decay=2"], "ema_decay"),
    "train out is a file": (["train", "digits", "--out", "{d}/a_file"], "is a file"),
    "train out occupied": (["train", "digits", "--out", "{d}/occupied"], "already holds files"),
    # checkpoints
    "zero-byte checkpoint": (
        ["sample", "{d}/zero.safetensors", "--out", "{d}/s"],
        "not a safetensors",
    ),
    "garbage checkpoint": (
        ["sample", "{d}/garbage.safetensors", "--out", "{d}/s"],
        "not a safetensors",
    ),
    "foreign safetensors": (
        ["sample", "{d}/foreign.safetensors", "--out", "{d}/s"],
        "not a difflab",
    ),
    "truncated checkpoint": (
        ["sample", "{d}/truncated.safetensors", "--out", "{d}/s"],
        "truncated",
    ),
    "checkpoint of another net": (
        ["sample", "{d}/othernet.safetensors", "--out", "{d}/s"],
        "does not fit",
    ),
    "run dir without checkpoints": (
        ["sample", "{d}/empty_dir", "--out", "{d}/s"],
        "holds no checkpoint",
    ),
    "missing checkpoint": (["sample", "{d}/nope.safetensors", "--out", "{d}/s"], "does not exist"),
    # sampling
    "unknown sampler": (S + ["--sampler", "plms9"], "unknown sampler 'plms9'"),
    "unknown discretization": (S + ["--discretization", "cubic"], "unknown discretization"),
    "negative eta": (S + ["--sampler", "ddim", "--eta", "-1"], "eta must be >= 0"),
    "eta not a number": (S + ["--eta", "lots"], "invalid float value"),
    "option the sampler lacks": (S + ["--sampler", "euler", "--option", "s_churn=1"], "no option"),
    "zero steps": (S + ["--steps", "0"], "--steps must be >= 1"),
    "negative n": (S + ["-n", "-3"], "-n must be >= 1"),
    "sample out is a file": (["sample", "{d}/run", "--out", "{d}/a_file"], "is a file"),
    # conditioning
    "class for an unconditional model": (
        S + ["--class", "3"],
        "model is unconditional; drop --class, add classifier",
    ),
    "prompt without text conditioning": (S + ["--prompt", "a bag"], "no text conditioning"),
    "class not an integer": (S + ["--class", "seven"], "not a class index"),
    "unknown guidance": (S + ["--guidance", "cfgg:scale=2"], "unknown guidance 'cfgg'"),
    "unknown guidance option": (S + ["--guidance", "cfg:scael=2"], "no option 'scael'"),
    "class cond on unlabelled data": (
        ["train", "swiss_roll", "--out", "{d}/new_run", "--set", "model.cond={{name='class'}}"],
        "needs class labels",
    ),
    "unknown conditioner": (T + ["--set", "model.cond={{name='audio'}}"], "unknown conditioner"),
    "demo out is a file": (["demo", "--out", "{d}/a_file"], "is a file"),
    "demo out occupied": (["demo", "--out", "{d}/occupied"], "holds other files"),
    "unknown command": (["trian"], "invalid choice"),
}


def sets(*items: str) -> list[str]:
    return T + [a for item in items for a in ("--set", item)]


C = "config train."
TYPES = {  # issue 20: one schema for every config value (type from the dataclass, range table)
    "steps not an integer": (sets("train.steps=2.5"), C + "steps must be an integer, got 2.5"),
    "steps a string": (sets("train.steps='ten'"), "train.steps must be a positive integer, got"),
    "batch size zero": (sets("train.batch_size=0"), C + "batch_size must be a positive integer"),
    "accumulate negative": (sets("train.accumulate=-1"), C + "accumulate must be a positive"),
    "lr a string": (sets("train.lr='fast'"), C + "lr must be a positive number, got the string"),
    "lr infinite": (sets("train.lr=inf"), C + "lr must be a positive number, got inf"),
    "weight decay negative": (sets("train.weight_decay=-0.1"), "weight_decay must be a number >= 0"),
    "warmup fractional": (sets("train.warmup=1.5"), C + "warmup must be an integer"),
    "grad clip infinite": (sets("train.grad_clip=inf"), C + "grad_clip must be a number >= 0"),
    "ema decay negative": (sets("train.ema_decay=-0.1"), C + "ema_decay must be in [0, 1)"),
    "ema decay one": (sets("train.ema_decay=1.0"), C + "ema_decay must be in [0, 1), got 1.0"),
    "hflip string false": (sets("data.hflip='false'"), "data.hflip must be true or false (write"),
    "hflip integer": (sets("data.hflip=1"), "config data.hflip must be true or false, got 1"),
    "bf16 string": (sets("train.bf16='yes'"), C + "bf16 must be true or false"),
    "betas one value": (sets("train.betas=[0.9]"), C + "betas must be a list of 2"),
    "beta of one": (sets("train.betas=[0.9, 1.0]"), C + "betas[1] must be in [0, 1)"),
    "betas a number": (sets("train.betas=0.9"), C + "betas must be a list"),
    "seed a boolean": (sets("train.seed=true"), C + "seed must be an integer, got True"),
    "seed fractional": (sets("train.seed=1.5"), C + "seed must be an integer, got 1.5"),
    "log every zero": (sets("train.log_every=0"), C + "log_every must be a positive integer"),
    "keep zero": (sets("train.keep=0"), C + "keep must be a positive integer"),
    "ckpt every negative": (sets("train.ckpt_every=-1"), C + "ckpt_every must be an integer >= 0"),
    "max seconds nan": (sets("train.max_seconds=nan"), C + "max_seconds must be a number >= 0"),
    "unknown lr decay": (sets("train.lr_decay='linear'"), C + "lr_decay must be one of none, cosine"),
    "device a number": (sets("train.device=3"), C + "device must be a string, got 3"),
    "eval n negative": (sets("train.eval_n=-1"), C + "eval_n must be an integer >= 0"),
    "eval every fractional": (sets("train.eval_every=2.5"), C + "eval_every must be an integer"),
    "eval ref a number": (sets("train.eval_ref=5"), C + "eval_ref must be a string"),
    "on_nonfinite a boolean": (sets("train.on_nonfinite=true"), C + "on_nonfinite must be"),
    "sample steps zero": (sets("sample.steps=0"), "config sample.steps must be a positive integer"),
    "sample n fractional": (sets("sample.n=2.5"), "config sample.n must be an integer"),
    "sample batch zero": (sets("sample.batch_size=0"), "sample.batch_size must be a positive"),
    "sample seed a string": (sets("sample.seed='x'"), "config sample.seed must be an integer"),
    "guidance a string": (sets("sample.guidance='cfg'"), "config sample.guidance must be a list"),
    "sigma data zero": (sets("model.sigma_data=0"), "model.sigma_data must be a positive number"),
    "sigma data -inf": (sets("model.sigma_data=-inf"), "model.sigma_data must be a positive"),
    "learned variance string": (sets("model.learned_variance='true'"), "must be true or false"),
    "cond a string": (sets("model.cond='class'"), "model.cond must be {} (unconditional)"),
    "net a string": (sets("model.net='unet'"), "net must be a table with a name"),
    "section a number": (sets("train=3"), "must be a table"),
    "string bool in file": (["train", "{d}/strbool.toml", "--out", "{d}/x"], "data.hflip must be"),
    "float steps in json": (["train", "{d}/float.json", "--out", "{d}/x"], "must be an integer"),
    "string steps in file": (["train", "{d}/strsteps.toml", "--out", "{d}/x"], "got the string"),
    "unknown objective": (sets("train.loss={{name='l7'}}"), "unknown objective 'l7'"),
    "unknown codec": (sets("model.codec={{name='vq9'}}"), "unknown codec 'vq9'"),
    "unknown config sampler": (sets("sample.sampler={{name='nope'}}"), "unknown sampler 'nope'"),
    "unknown config discretization": (
        sets("sample.discretization={{name='nope'}}"), "unknown discretization 'nope'"),
    "dataset size zero": (T + ds("{{name='digits', size=0}}"), "size=0 is invalid"),
    "folder channels a string": (
        T + ds("{{name='folder', path='{d}/corrupt', channels='one'}}"), "channels='one'"),
    "digits unknown split": (T + ds("{{name='digits', split='val'}}"), "split='val' is invalid"),
    "digits unknown resize": (T + ds("{{name='digits', resize='cubic'}}"), "resize='cubic'"),
    "fashion root missing": (T + ds("{{name='fashion_mnist', root='{d}/nope'}}"), "not found in"),
    "folder mixes loose images": (T + ds("{{name='folder', path='{d}/loose'}}"), "mixes class"),
    "folder path is a file": (T + ds("{{name='folder', path='{d}/a_file'}}"), "does not exist"),
    "idx labels of another length": (
        T + ds("{{name='idx', images='{d}/imgs.idx', labels='{d}/labels2.idx'}}"), "labels2.idx"),
    "swiss roll of no points": (T + ds("{{name='swiss_roll', n=0}}"), "n=0 is invalid"),
    "mixture negative std": (T + ds("{{name='gaussian_mixture', std=-1.0}}"), "std=-1.0"),
    "train out under a file": (["train", "digits", "--out", "{d}/a_file/run"], "cannot create"),
}
OUT_E, REF = ["--ref", "{d}/nope.npz"], ["--ref", "{d}/ref.npz"]
OUTPUTS = {  # existing outputs are never overwritten; output paths checked before any work
    "sample into an occupied folder": (["sample", "{d}/run", "--out", "{d}/occupied"],
                                       "already holds files; pass --overwrite"),  # fmt: skip
    "sample out under a file": (["sample", "{d}/run", "--out", "{d}/a_file/s"], "not a writable"),
    "eta infinite": (S + ["--sampler", "ddim", "--eta", "inf"], "--eta must be a finite number"),
    "eta nan": (S + ["--sampler", "ddim", "--eta", "nan"], "--eta must be a finite number"),
    "option infinite": (S + ["--option", "s_churn=inf"], "s_churn must be a finite number"),
    "zero batch size": (S + ["--batch-size", "0"], "--batch-size must be >= 1"),
    "n not an integer": (S + ["-n", "2.5"], "invalid int value"),
    "seed not an integer": (S + ["--seed", "x"], "invalid int value"),
    "features out exists": (["train-features", "digits", "--out", "{d}/exists.safetensors"],
                            "exists; pass --overwrite"),  # fmt: skip
    "features out is a folder": (["train-features", "digits", "--out", "{d}/occupied"], "folder"),
    "features zero steps": (["train-features", "digits", "--out", "{d}/f.st", "--steps", "0"],
                            "--steps must be >= 1"),  # fmt: skip
    "features on unlabelled folder": (["train-features", "{d}/one_class", "--out", "{d}/f.st",
                                       "--objective", "classification"],
                                      "labelled image dataset"),  # fmt: skip
    "ref-stats out exists": (["ref-stats", "digits", "--out", "{d}/exists.npz"], "exists"),
    "ref-stats out is a folder": (["ref-stats", "digits", "--out", "{d}/occupied"], "a folder"),
    "ref-stats of nothing": (["ref-stats", "{d}/nope", "--out", "{d}/r.npz"], "neither an image"),
    "ref-stats n of one": (["ref-stats", "digits", "--out", "{d}/r.npz", "-n", "1"], "n=1"),
    "ref-stats weights without inception": (
        ["ref-stats", "digits", "--out", "{d}/r.npz", "--weights", "w.pth"], "--weights is for"),
    "eval out exists": (["eval", "{d}/run", *OUT_E, "--out", "{d}/exists.json"], "exists"),
    "eval out is a folder": (["eval", "{d}/run", *OUT_E, "--out", "{d}/occupied"], "is a folder"),
    "eval plot exists": (["eval", "{d}/run", *OUT_E, "--plot", "{d}/exists.png"], "--plot"),
    "eval out under a file": (["eval", "{d}/run", *OUT_E, "--out", "{d}/a_file/r.json"],
                              "not a writable folder"),  # fmt: skip
    "eval missing ref": (["eval", "{d}/run", *OUT_E], "does not exist"),
    "eval garbage ref": (["eval", "{d}/run", "--ref", "{d}/garbage.npz"], "not a difflab refer"),
    "eval steps zero": (["eval", "{d}/run", *REF, "--steps", "0,5"], "--steps must be >= 1"),
    "eval unknown features": (["eval", "{d}/run", *REF, "--features", "vgg"], "is not raw"),
    "nll json exists": (["nll", "{d}/run", "--data", "digits", "--json", "{d}/exists.json"],
                        "exists.json exists; pass --overwrite"),  # fmt: skip
    "nll json is a folder": (["nll", "{d}/run", "--data", "digits", "--json", "{d}/occupied"],
                             "is a folder"),  # fmt: skip
    "nll on points": (["nll", "{d}/run", "--data", "swiss_roll"], "not 8-bit image data"),
    "nll unknown method": (["nll", "{d}/run", "--data", "digits", "--method", "x"], "invalid"),
    "classifier out exists": (["train-classifier", "digits", "--out", "{d}/exists.safetensors"],
                              "exists; pick a new path or pass --force"),  # fmt: skip
    "classifier ema decay 2": (["train-classifier", "digits", "--out", "{d}/c.st", "--set",
                                "ema_decay=2"], "`ema_decay` must be in [0, 1), got 2"),  # fmt: skip
    "classifier negative weight decay": (
        ["train-classifier", "digits", "--out", "{d}/c.st", "--set", "weight_decay=-1"],
        "`weight_decay` must be a number >= 0"),
    "classifier sigma data zero": (
        ["train-classifier", "digits", "--out", "{d}/c.st", "--set", "sigma_data=0"],
        "`sigma_data` must be a positive"),
    "classifier lr infinite": (["train-classifier", "digits", "--out", "{d}/c.st", "--lr", "inf"],
                               "--lr must be a finite number"),  # fmt: skip
    "classifier on points": (["train-classifier", "swiss_roll", "--out", "{d}/c.st"], "labelled"),
    "encoder ema decay": (["train-encoder", "digits", "--out", "{d}/e.st", "--set",
                           "ema_decay=1.5"], "`ema_decay` must be in [0, 1)"),  # fmt: skip
    "demo seconds infinite": (["demo", "--out", "{d}/dd", "--seconds", "inf"], "finite number"),
    "list of nothing": (["list", "bogus"], "invalid choice"),
}
SM = ["--out", "{d}/s"]
CHECKPOINTS = {  # damaged files name the damage
    "flipped bytes in a model": (["sample", "{d}/flipped.safetensors", *SM], "is corrupt"),
    "flipped bytes in a run's newest": (["sample", "{d}/flipped_run", *SM], "checksum"),
    "nan weights": (["sample", "{d}/nan.safetensors", *SM], "non-finite weights"),
    "header not json": (["sample", "{d}/badheader.safetensors", *SM], "not a safetensors"),
    "metadata a list": (["sample", "{d}/meta_list.safetensors", *SM], "corrupt difflab metadata"),
    "metadata kind a number": (["sample", "{d}/meta_kind5.safetensors", *SM], "corrupt difflab"),
    "metadata without config": (["sample", "{d}/meta_noconfig.safetensors", *SM], "no model"),
    "metadata not json": (["sample", "{d}/meta_badjson.safetensors", *SM], "corrupt difflab"),
    "classifier as model": (["sample", "{d}/classifier.safetensors", *SM], "noise-aware class"),
    "feature net as model": (["sample", "{d}/feature_net.safetensors", *SM], "feature net"),
    "codec as model": (["sample", "{d}/codec.safetensors", *SM], "autoencoder (codec)"),
    "resume state as model": (
        ["sample", "{d}/run/checkpoints/step-0000001.state.safetensors", *SM], "'state' file"),
    "nan model for nll": (["nll", "{d}/nan.safetensors", "--data", "digits"], "non-finite"),
}
CASES |= TYPES | OUTPUTS | CHECKPOINTS


def _snapshot(d):
    return {p: p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, files, capsys):
    argv, message = CASES[name]
    before = _snapshot(files)
    code = main([a.format(d=files) for a in argv] + ["--quiet"] * (argv[0] != "trian"))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 if isinstance(code, int) else False, err
    assert len(err) == 1 and err[0].startswith("difflab: error:"), err
    assert message in err[0], err
    assert _snapshot(files) == before  # nothing created, changed or overwritten
    assert not (files / "new_run").exists()


def test_corpus_is_large_enough():
    assert len(CASES) >= 120
