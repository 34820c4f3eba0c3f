"""Conditioners: captions, the null condition, CFG dropout statistics, training with a class
condition (bit-exact resume with dropout on), and `difflab sample --class/--prompt`."""

import json
import math

import pytest
import torch
from requires import require_fashion_mnist
from test_train import _tiny_cfg

from difflab import train
from difflab.cli.main import main
from difflab.cli.request_args import parse_classes
from difflab.conditioning.base import build_conditioner, drop, sampling_cond
from difflab.conditioning.captions import captions
from difflab.core.config import load_config
from difflab.core.errors import UsageError
from difflab.core.types import net_cond, null_cond
from difflab.inference.request import request
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import load_denoiser

CLASS_COND = "model.cond={name='class', p_uncond=0.5}"
MICRO = ("model.net={name='unet', model_channels=8, channel_mult=[1], num_res_blocks=1, "
         "attention_resolutions=[]}")  # fmt: skip


def _class_cfg(steps: int):
    return _tiny_cfg(MICRO, CLASS_COND, "train.batch_size=4", f"train.steps={steps}")


def test_captions_per_dataset():
    assert captions("fashion_mnist", ["Ankle boot", "Bag"])[0][0] == "a photo of an ankle boot"
    assert captions("fashion_mnist", ["Trouser"])[0][0] == "a photo of a pair of trousers"
    digits = captions("digits", [str(k) for k in range(10)])
    assert digits[7][0] == "a handwritten seven" and len(digits) == 10
    folder = captions("folder", ["orange_cat", "dog"])  # a folder dataset: subfolder names
    assert folder == [["a photo of an orange cat", "a picture of an orange cat", "an orange cat"],
                      ["a photo of a dog", "a picture of a dog", "a dog"]]  # fmt: skip


def _class_cond(n=10_000, k=10):
    return build_conditioner({"name": "class", "num_classes": k}).from_classes(torch.arange(n) % k)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_dropout_rate_and_dropped_rows_are_the_null(p):
    """Ho & Salimans (2022) Alg. 1: each row is replaced by ∅ independently with probability p."""
    n = 10_000
    cond = _class_cond(n) | {"tokens": torch.randn(n, 3, 4), "tokens_mask": torch.ones(n, 3) > 0}
    out = drop(cond, p, torch.Generator().manual_seed(1))
    dropped = (out["vector"] == 0).all(1)  # [n]; a one-hot row is never all zero
    tolerance = 5 * math.sqrt(n * p * (1 - p))  # 5 binomial standard deviations
    assert abs(dropped.sum().item() - n * p) <= tolerance
    null = null_cond(cond)
    for key in ("vector", "tokens", "tokens_mask"):
        assert torch.equal(out[key][dropped], null[key][dropped]), key
        assert torch.equal(out[key][~dropped], cond[key][~dropped]), key
    assert torch.equal(out["labels"], cond["labels"])  # side information is kept
    assert not null["tokens_mask"].any() and not null["vector"].any()
    assert "labels" not in net_cond(out)


def test_dropout_is_drawn_from_the_generator():
    cond = _class_cond(64)
    a = drop(cond, 0.5, torch.Generator().manual_seed(3))
    b = drop(cond, 0.5, torch.Generator().manual_seed(3))
    c = drop(cond, 0.5, torch.Generator().manual_seed(4))
    assert torch.equal(a["vector"], b["vector"]) and not torch.equal(a["vector"], c["vector"])


def test_class_conditioner_and_sampling_requests():
    conditioner = build_conditioner({"name": "class", "num_classes": 4, "p_uncond": 0.2})
    assert conditioner.net_options() == {"cond_vector_dim": 4}
    cond, asked = sampling_cond(conditioner, 6)
    assert asked == {"classes": [0, 1, 2, 3, 0, 1]}
    torch.testing.assert_close(cond["vector"], torch.eye(4)[[0, 1, 2, 3, 0, 1]])
    cond, asked = sampling_cond(conditioner, 3, classes=parse_classes(["2,3", "1"]))
    assert asked == {"classes": [2, 3, 1]} and cond["labels"].tolist() == [2, 3, 1]
    with pytest.raises(UsageError, match="outside this model's classes 0..3"):
        sampling_cond(conditioner, 3, classes=[4])
    with pytest.raises(UsageError, match="no text conditioning"):
        sampling_cond(conditioner, 3, prompts=["a bag"])
    with pytest.raises(UsageError, match="unconditional"):
        sampling_cond(None, 3, classes=[1])
    with pytest.raises(UsageError, match="not a class index"):
        parse_classes(["one"])
    with pytest.raises(UsageError, match="p_uncond"):
        build_conditioner({"name": "class", "num_classes": 4, "p_uncond": 1.5})


def test_unconditional_model_takes_classes_and_prompts_only_for_guidance():
    """Classes ride along as labels for classifier guidance, prompts are only recorded for text."""
    cond, asked = sampling_cond(None, 4, classes=[2, 5], guided_by=["classifier"])
    assert cond["labels"].tolist() == [2, 5, 2, 5] and asked == {"classes": [2, 5, 2, 5]}
    cond, asked = sampling_cond(None, 2, prompts=["a boot"], guided_by=["text"])
    assert cond == {} and asked == {"prompts": ["a boot", "a boot"]}
    with pytest.raises(UsageError, match="classifier guidance"):
        sampling_cond(None, 2, classes=[1], guided_by=["text"])


def test_request_puts_config_defaults_after_the_users_terms():
    """Default guidance (e.g. x̂0 clipping) follows the user's terms; naming it again replaces it."""
    config = {"model": {"shape": [1, 4, 4]}, "sample": {"guidance": ["static_threshold"]}}
    _, chain, asked = request(None, config, 2, guidance=["dynamic_threshold:p=0.9"])
    assert [s["name"] for s in asked["guidance"]] == ["dynamic_threshold", "static_threshold"]
    assert len(chain.terms) == 2
    _, chain, asked = request(None, config, 2, guidance=[{"name": "static_threshold"}])
    assert [s["name"] for s in asked["guidance"]] == ["static_threshold"]
    _, chain, asked = request(None, {**config, "sample": {}}, 2)
    assert chain.terms == [] and "guidance" not in asked


def test_text_conditioner_training_captions_match_the_encoder():
    """from_labels draws one template per item; its cached encoding equals encoding that caption."""
    spec = {"name": "text", "dataset": "digits", "class_names": [str(k) for k in range(10)]}
    conditioner = build_conditioner(spec)
    labels = torch.tensor([7, 7, 0, 3])
    cond = conditioner.from_labels(labels, torch.Generator().manual_seed(0))
    table = captions("digits", conditioner.class_names)
    for i, k in enumerate(labels.tolist()):
        direct = conditioner.from_prompts(table[k])  # all templates of class k
        match = [torch.allclose(cond["vector"][i], v, atol=1e-5) for v in direct["vector"]]
        assert any(match), i
        t = match.index(True)
        torch.testing.assert_close(cond["tokens"][i], direct["tokens"][t], atol=1e-5, rtol=0)
    assert conditioner.net_options() == {"cond_vector_dim": 384, "cond_token_dim": 384}
    _, asked = sampling_cond(conditioner, 2, classes=[7])
    assert asked["prompts"] == ["a handwritten seven"] * 2


@pytest.fixture(scope="module")
def class_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("class") / "run"
    train(_class_cfg(3), run)
    return run


def test_class_conditional_training_resume_is_bit_exact(class_run, tmp_path):
    """With dropout on, the condition draws come from the training generator: resume matches."""
    train(_class_cfg(1), tmp_path / "b")
    resumed = train(_class_cfg(3), tmp_path / "b", resume=True)
    straight = ckpt.latest_checkpoint(class_run)
    for which in (ckpt.load_tensors, lambda p: ckpt.load_tensors(ckpt.state_path(p))):
        ta, tb = which(straight)[0], which(resumed)[0]
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    denoiser, config, _ = load_denoiser(class_run)
    assert config["model"]["cond"] == {"name": "class", "p_uncond": 0.5, "num_classes": 10}
    assert denoiser.conditioner.num_classes == 10


def test_condition_reaches_the_net(class_run):
    """After a few steps the class vector changes the output (the slot is wired, not ignored)."""
    denoiser, _, _ = load_denoiser(class_run)
    for p in denoiser.parameters():  # make every layer (incl. zero-initialised ones) live
        p.data.add_(0.01 * torch.randn_like(p))
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([1.0, 1.0])
    a = denoiser(x, sigma, denoiser.conditioner.from_classes(torch.tensor([0, 0])))
    b = denoiser(x, sigma, denoiser.conditioner.from_classes(torch.tensor([5, 5])))
    assert not torch.allclose(a, b)


def test_unlabelled_data_with_a_class_condition_is_a_usage_error(tmp_path):
    cfg = load_config("swiss_roll", ["model.cond={name='class'}", "train.steps=1"])
    with pytest.raises(UsageError, match="needs class labels"):
        train(cfg, tmp_path / "run")


def test_cli_sample_with_classes_and_guidance(class_run, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sample", str(class_run), "--out", str(out), "-n", "4", "--steps", "2", "--quiet"]
    assert main(argv + ["--class", "3", "--class", "5", "--guidance", "cfg:scale=3"]) == 0
    asked = json.loads((out / "labels.json").read_text())
    assert asked == {"classes": [3, 5, 3, 5], "guidance": [{"name": "cfg", "scale": "3"}]}
    assert len(list((out / "images").glob("*.png"))) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--class", "10"], "outside this model's classes 0..9"),
     (["--class", "-1"], "outside this model's classes"),
     (["--prompt", "a sneaker"], "no text conditioning"),
     (["--guidance", "cfgg:scale=2"], "unknown guidance 'cfgg'"),
     (["--guidance", "cfg:scael=2"], "no option 'scael'")],
)  # fmt: skip
def test_cli_bad_conditions_exit_2_with_one_line(class_run, tmp_path, capsys, extra, message):
    argv = ["sample", str(class_run), "--out", str(tmp_path / "s"), "-n", "2", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("difflab: error:") and message in err[0], err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("config", ["digits_class", "fashion_mnist_class"])
def test_dry_run_resolves_the_condition(config, tmp_path, capsys):
    """The printed config describes itself: the class count is filled in from the data."""
    if config.startswith("fashion_mnist"):
        require_fashion_mnist()
    assert main(["train", config, "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    assert 'cond = {name = "class", p_uncond = 0.1, num_classes = 10}' in capsys.readouterr().out


def test_text_conditional_model_trains_and_samples_from_prompts(tmp_path, capsys):
    """Captions of the digits → MiniLM tokens cross-attended by a micro U-Net; sample --prompt."""
    net = MICRO.replace("attention_resolutions=[]", "attention_resolutions=[8], num_heads=2")
    text = "model.cond={name='text', p_uncond=0.2}"
    run = tmp_path / "run"
    train(_tiny_cfg(net, text, "train.batch_size=4", "train.steps=2"), run)
    denoiser, config, _ = load_denoiser(run)
    cond = config["model"]["cond"]
    assert cond["dim"] == 384 and len(cond["class_names"]) == 10
    assert denoiser.conditioner.class_prompts(torch.tensor([7])) == ["a handwritten seven"]
    assert denoiser.net.cond_token_dim == 384
    out = tmp_path / "s"
    argv = ["sample", str(run), "--out", str(out), "-n", "3", "--steps", "2", "--quiet"]
    assert main(argv + ["--prompt", "a handwritten seven", "--prompt", "a handwritten one"]) == 0
    asked = json.loads((out / "labels.json").read_text())
    assert asked == {"prompts": ["a handwritten seven", "a handwritten one", "a handwritten seven"]}
    assert main(argv + ["--class", "12", "--overwrite"]) == 2  # --out holds the set above
    assert "outside this model's classes 0..9" in capsys.readouterr().err
