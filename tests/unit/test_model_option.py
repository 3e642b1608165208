"""``--model MODULE:ATTR``: what names a model, and the one-line message for what does not."""

from dataclasses import replace

import pytest

from harness.model_specs import ModelSpecError, memory_spec, model_spec, traits
from harness.models import MEMORY_ZOO, ZOO, ModelSpec


def my_model() -> ModelSpec:
    return replace(ZOO["mlp"], name="my_model")


SPEC = replace(ZOO["gru"], name="a_spec")


def not_a_model() -> str:
    return "mlp"


def broken() -> ModelSpec:
    raise RuntimeError("no weights here\non this machine")


def test_a_spec_a_factory_or_a_zoo_name_names_a_model():
    assert model_spec(f"{__name__}:my_model").name == "my_model"
    assert model_spec(f"{__name__}:SPEC") is SPEC
    assert model_spec("transformer") is ZOO["transformer"]
    assert memory_spec("transformer") is MEMORY_ZOO["transformer"]
    assert memory_spec(f"{__name__}:SPEC") is SPEC  # the user's model, at the user's size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resnet", "--model 'resnet': expected MODULE:ATTR naming a harness.models.ModelSpec"),
        ("no_such_module:x", "importing 'no_such_module' failed: ModuleNotFoundError"),
        (f"{__name__}:nothing", "has no attribute 'nothing'"),
        (f"{__name__}:not_a_model", "gave a str, not a harness.models.ModelSpec"),
        (f"{__name__}:broken", "calling it failed: RuntimeError: no weights here on this machine"),
    ],
)
def test_what_names_no_model_is_one_line_naming_the_option(text, message):
    with pytest.raises(ModelSpecError) as info:
        model_spec(text)
    assert str(info.value).startswith(f"--model {text!r}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_traits_are_the_flags_or_found_in_the_model():
    assert traits(ZOO["cnn_bn"]).batch_dependent
    assert traits(replace(ZOO["cnn_bn"], batch_dependent=None)).batch_dependent  # found
    assert not traits(replace(ZOO["cnn_bn"], batch_dependent=False)).batch_dependent  # as given
    assert traits(replace(ZOO["sparse_embedding"], sparse_grads=None)).sparse_grads
    assert traits(replace(ZOO["lstm"], recurrent=None)).recurrent
    assert not traits(ZOO["mlp"]).recurrent
    assert traits(ZOO["mlp"]).tied == ()
