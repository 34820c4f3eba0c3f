"""The Conditioner contract, over every registered conditioner: a request builds batch-first
slots for n samples (sample i's condition depends on i only), inputs a conditioner does not take
are refused in library terms unless a guidance term reads them, and `resolve` fills a config
from the data that builds the same net."""

from types import SimpleNamespace

import pytest
import torch
from tiny_models import tiny_clip

from difflab.conditioning import CONDITIONERS, ConditionRequest, condition
from difflab.conditioning.base import INPUTS, conditioner_class, resolve_cond
from difflab.core.errors import UsageError
from difflab.core.types import NET_SLOTS

SHAPE = (1, 8, 8)
SPECS = {  # one small spec per registered conditioner (a new one must add its own)
    "class": {"name": "class", "num_classes": 3},
    "text": {"name": "text", "dataset": "digits", "class_names": ["0", "1", "2"]},
    "image": {"name": "image", "factor": 2, "channels": 1},
    "embedding": {"name": "embedding", "clip": str(tiny_clip(shape=SHAPE)), "dim": 384},
}
REQUIRED = {  # options the data cannot fill in (the user names them)
    "embedding": {"clip": SPECS["embedding"]["clip"]},
}
VALUES = {  # a value of each request input, cycled over the samples
    "classes": (2, 0),
    "prompts": ("a handwritten two", "the digit zero"),
    "negative_prompts": ("blurry", "a seven"),
    "images": torch.linspace(-1, 1, 5 * 16).reshape(5, 1, 4, 4),
    "masks": torch.ones(5, 1, 8, 8),  # inpainting masks (1 = known)
    "embeddings": torch.nn.functional.normalize(torch.randn(5, 384), dim=-1),  # unCLIP decoder
}
INSTEAD_OF = {"embeddings": "images"}  # an input given in place of another, never with it
TENSORS = ("images", "embeddings")  # tensor inputs: not recorded in `asked`
GUIDES = {name: need.guidance for name, need in INPUTS.items()}


def test_every_conditioner_has_a_spec():
    assert sorted(SPECS) == CONDITIONERS.names()


def needed(conditioner) -> list[str]:
    """The inputs a conditioner is given at once (its `takes` when it needs user input)."""
    if conditioner is None or not conditioner.needs_user_input:
        return []
    return [f for f in conditioner.takes if INSTEAD_OF.get(f) not in conditioner.takes]


def _request(n: int, fields, guided_by=()) -> ConditionRequest:
    values = {f: VALUES[f][:n] if f == "images" else VALUES[f] for f in fields}
    return ConditionRequest(n, guided_by=tuple(guided_by), image_shape=SHAPE, **values)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_build_gives_batch_first_slots_that_depend_on_the_sample_index_only(name):
    conditioner = CONDITIONERS.build(SPECS[name])
    fields = needed(conditioner)
    small, asked_small = condition(conditioner, _request(2, fields))
    big, asked_big = condition(conditioner, _request(5, fields))
    assert set(big) <= set(NET_SLOTS) | {"labels"} and set(big) & set(NET_SLOTS), set(big)
    for key in big:
        assert len(big[key]) == 5, key
        torch.testing.assert_close(big[key][:2], small[key], msg=key)
    for key, values in asked_big.items():
        assert len(values) == 5 and values[:2] == asked_small[key], key
    for field in conditioner.takes:  # every input it takes is honoured (cycled, recorded)
        _, asked = condition(conditioner, _request(4, [field]))
        if field not in TENSORS:
            assert asked[field] == [VALUES[field][i % 2] for i in range(4)], field


@pytest.mark.parametrize("name", sorted(SPECS))
def test_user_input_is_required_exactly_when_declared(name):
    conditioner = CONDITIONERS.build(SPECS[name])
    if conditioner.needs_user_input:
        with pytest.raises(UsageError, match=rf"pass `{conditioner.takes[0]}`"):
            condition(conditioner, _request(2, ()))
    else:
        cond, _ = condition(conditioner, _request(2, ()))
        assert all(len(v) == 2 for v in cond.values())
    assert conditioner_class(SPECS[name]).needs_user_input == conditioner.needs_user_input


NOT_TAKEN = [(name, field) for name in [*sorted(SPECS), None] for field in sorted(INPUTS)
             if field not in conditioner_class(SPECS.get(name)).takes]  # fmt: skip


@pytest.mark.parametrize(("name", "field"), NOT_TAKEN)
def test_an_input_not_taken_is_refused_unless_a_guidance_term_reads_it(name, field):
    conditioner = CONDITIONERS.build(SPECS[name]) if name else None
    base = needed(conditioner)
    with pytest.raises(UsageError, match=rf"^`{field}` given but this model .*drop `{field}`"):
        condition(conditioner, _request(3, [*base, field]))
    if GUIDES[field] is None:
        return
    cond, asked = condition(conditioner, _request(3, [*base, field], [GUIDES[field]]))
    assert asked[field] == [VALUES[field][i % 2] for i in range(3)]
    side = INPUTS[field].side
    if side:
        assert cond[side].tolist() == asked[field]


def test_unconditional_model_builds_nothing_but_the_guidance_inputs():
    cond, asked = condition(None, _request(3, ["classes", "prompts"], ["classifier", "text"]))
    assert cond.keys() == {"labels"} and cond["labels"].dtype == torch.int64
    assert asked == {"classes": [2, 0, 2], "prompts": ["a handwritten two", "the digit zero",
                                                      "a handwritten two"]}  # fmt: skip


def _data(kind: str, labelled: bool):
    return SimpleNamespace(
        kind=kind, shape=SHAPE if kind == "image" else (2,), num_classes=3 if labelled else 0,
        labels=torch.tensor([0, 1, 2]) if labelled else None,
        class_names=["0", "1", "2"] if labelled else None,
    )  # fmt: skip


@pytest.mark.parametrize("name", sorted(SPECS))
def test_resolve_fills_the_spec_from_labelled_image_data(name):
    spec = resolve_cond({"name": name, **REQUIRED.get(name, {})}, _data("image", True), "digits")
    conditioner = CONDITIONERS.build(spec)  # the saved table builds without the data
    assert spec["name"] == name and all(v > 0 for v in conditioner.net_options().values())
    assert resolve_cond(spec, _data("image", True), "digits") == spec  # idempotent
    with pytest.raises(UsageError, match="drop cond"):
        resolve_cond({"name": name, **REQUIRED.get(name, {})}, _data("points", False), "swiss_roll")
