"""``--memory-model MODULE:ATTR``: what it accepts, and the one-line message for what it does
not."""

from dataclasses import replace

import pytest

from harness.impl import ImplSpecError
from harness.models import ZOO, ModelSpec
from harness.plugin.memory import load_memory_model


def my_model() -> ModelSpec:
    return replace(ZOO["mlp"], name="my_model")


def not_a_model() -> str:
    return "mlp"


def broken() -> ModelSpec:
    raise RuntimeError("no weights here")


def test_a_factory_returning_a_model_spec_is_loaded():
    assert load_memory_model(f"{__name__}:my_model").name == "my_model"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("harness.models", ValueError, "--memory-model 'harness.models': expected MODULE:ATTR"),
        (f"{__name__}:nothing", ImplSpecError, "has no attribute 'nothing'"),
        (
            f"{__name__}:not_a_model",
            ValueError,
            "returned a str without name, make, make_inputs, loss; return a harness.models."
            "ModelSpec",
        ),
        (f"{__name__}:broken", ValueError, "calling it failed: RuntimeError: no weights here"),
    ],
)
def test_what_is_not_a_model_is_one_line_naming_the_option(text, error, message):
    with pytest.raises(error, match="--memory-model") as info:
        load_memory_model(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
