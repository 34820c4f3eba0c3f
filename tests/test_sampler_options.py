"""User options, derived from the sampler contract in one place (samplers.base.sampler_options):
over every registered sampler they exclude the contract's arguments, each is accepted at its
default without changing the result, each has a meaning; `difflab list` shows them (and each
guidance term's), and the CLI's table options take inline TOML as `--set` does."""

import inspect

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import save_run

from difflab.cli.main import build_parser, main
from difflab.cli.request_args import sampler_choice
from difflab.core.errors import UsageError
from difflab.core.schedules import build_schedule, discretize
from difflab.guidance.chain import GUIDANCES
from difflab.samplers import SAMPLERS
from difflab.samplers.base import CONTRACT_ARGUMENTS, check_sampler_options, sampler_options
from difflab.samplers.options import option_help
from oracles import float64_default, sample_from_gaussian_oracle

GRID = discretize(build_schedule("edm"), {"name": "karras", "sigma_min": 0.02, "sigma_max": 20},
                  6).double()  # fmt: skip


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_user_options_are_the_parameters_beyond_the_contract(name):
    params = inspect.signature(SAMPLERS.get(name)).parameters
    assert list(params)[: len(CONTRACT_ARGUMENTS)] == list(CONTRACT_ARGUMENTS)
    assert list(sampler_options(name)) == list(params)[len(CONTRACT_ARGUMENTS) :]
    for argument in ("noise", "callback", "step_hook"):
        with pytest.raises(UsageError, match="takes no option") as err:
            check_sampler_options(name, {argument: None})
        listed = str(err.value).split("valid options: ")[1]
        assert listed == (", ".join(sampler_options(name)) or "(none)")


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_listed_option_is_accepted_at_its_default(name):
    """Passing each option at its default changes nothing (same seeded noise, same bytes)."""
    with float64_default():
        plain = sample_from_gaussian_oracle(name, GRID, shape=(8, 16))
        options = sampler_options(name)
        assert all(v is not inspect.Parameter.empty for v in options.values()), options
        given = sample_from_gaussian_oracle(name, GRID, shape=(8, 16), **options)
    assert torch.equal(plain, given)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_every_user_option_has_a_meaning(name):
    missing = [k for k in sampler_options(name) if not option_help(name, k)]
    assert not missing, missing


def test_a_sigma_grid_option_is_sent_to_the_discretization():
    with pytest.raises(UsageError, match="option of the sigma grid.*`discretization`") as err:
        check_sampler_options("dpmpp_2m", {"sigma_max": 80.0})
    assert "lower_order_final" in str(err.value) and "step_hook" not in str(err.value)
    check_sampler_options("consistency", {"sigma_min": 0.002})  # its own option, not the grid's


@pytest.mark.parametrize("name", GUIDANCES.names())
def test_every_guidance_option_has_a_meaning(name):
    documented = GUIDANCES.meta(name)["options"]
    assert set(documented) == set(GUIDANCES.options(name, skip=1)), name
    assert all(documented.values())


def _list(capsys, what: str) -> dict[str, list[str]]:
    """`difflab list WHAT` as {entry: its option lines}."""
    assert main(["list", what]) == 0
    blocks, name = {}, None
    for line in capsys.readouterr().out.splitlines()[1:]:
        if line.startswith("      "):
            blocks[name].append(line.strip())
        else:
            name = line.split()[0]
            blocks[name] = []
    return blocks


def test_list_guidances_shows_each_terms_options_with_defaults_and_meanings(capsys):
    blocks = _list(capsys, "guidances")
    assert set(blocks) == set(GUIDANCES.names())
    for name, lines in blocks.items():
        options = GUIDANCES.options(name, skip=1)
        assert [line.split("=")[0] for line in lines] == list(options), name
        for line in lines:
            assert line.endswith(GUIDANCES.meta(name)["options"][line.split("=")[0]]), line
    assert "scale=1.0" in blocks["cfg"][0] and blocks["dynamic_threshold"][0].startswith("p=0.995")


def test_list_samplers_shows_user_options_only(capsys):
    blocks = _list(capsys, "samplers")
    assert set(blocks) == set(SAMPLERS.names())
    for name, lines in blocks.items():
        assert [line.split("=")[0] for line in lines] == list(sampler_options(name)), name
    assert blocks["heun"][0].startswith("s_churn=0.0") and not blocks["euler"]


def test_table_options_take_inline_toml_like_set():
    parse = build_parser().parse_args
    args = parse(["sample", "RUN", "--out", "o", "--sampler", "{name='heun', s_churn=10}",
                  "--option", "s_tmin=0.5", "--guidance", "{name='cfg', scale=2}",
                  "--guidance", "static_threshold"])  # fmt: skip
    assert sampler_choice(args) == {"name": "heun", "s_churn": 10, "s_tmin": 0.5}
    assert args.guidance == [{"name": "cfg", "scale": 2}, "static_threshold"]
    assert sampler_choice(parse(["sample", "RUN", "--out", "o", "--sampler", "heun"])) == "heun"
    no_name = parse(["sample", "RUN", "--out", "o", "--option", "s_churn=5", "--eta", "0.1"])
    assert sampler_choice(no_name) == {"s_churn": 5, "eta": 0.1}  # on the config's sampler
    edit = parse(["edit", "sdedit", "RUN", "--out", "o", "--sampler", "{name='ddim', eta=0.5}",
                  "--option", "eta=0"])  # fmt: skip
    assert sampler_choice(edit) == {"name": "ddim", "eta": 0}


def test_inline_tables_sample_the_same_bytes_as_the_other_spellings(tmp_path, capsys):
    run = save_run(tmp_path / "run", "class")
    common = ["sample", str(run), "-n", "2", "--steps", "3", "--class", "1", "--quiet"]
    spellings = {
        "flags": ["--sampler", "euler_ancestral", "--eta", "0.5", "--guidance", "cfg:scale=2"],
        "tables": ["--sampler", "{name='euler_ancestral', eta=0.5}", "--guidance",
                   "{name='cfg', scale=2}"],
    }  # fmt: skip
    for key, extra in spellings.items():
        assert main([*common, "--out", str(tmp_path / key), *extra]) == 0, capsys.readouterr()
    files = sorted(p.name for p in (tmp_path / "flags" / "images").glob("*.png"))
    assert len(files) == 2
    for f in files:  # the same pixels (the PNGs' settings spell the guidance differently)
        a, b = (np.asarray(Image.open(tmp_path / k / "images" / f)) for k in spellings)
        assert np.array_equal(a, b), f


def test_cli_sends_sigma_max_to_discretization(tmp_path, capsys):
    run = save_run(tmp_path / "run")
    args = ["sample", str(run), "--out", str(tmp_path / "s"), "-n", "1", "--steps", "2", "--quiet"]
    assert main([*args, "--sampler", "euler", "--option", "sigma_max=80"]) == 2
    err = capsys.readouterr().err
    assert "sigma_max is an option of the sigma grid" in err and "--discretization" in err, err
    assert "step_hook" not in err and "callback" not in err
    assert main([*args, "--option", "sigma_max"]) == 2
    assert "is not KEY=VALUE" in capsys.readouterr().err
