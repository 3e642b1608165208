"""``--model MODULE:ATTR``: the user's models, which every claim of ``suites/dp``, ``suites/ddp``
and ``suites/memory`` that runs "a model" then runs instead of the built-in zoo.

A claim that runs a model takes the argument ``model``: a model reference (a zoo name, or
``MODULE:ATTR``), plain data that crosses to the ranks of a distributed test, resolved with
``harness.model_specs.model_spec``. This plugin parametrises it: with the ``--model`` models,
else with the zoo models the test's ``@pytest.mark.zoo(...)`` names (the whole zoo without the
marker). The largest-batch search takes ``memory_model`` the same way, its default the realistic
``MEMORY_ZOO``. Claims about one purpose-built model (a probe, a BatchNorm CNN for a buffer
claim) keep theirs.

``--memory-model`` is the option's old name: an alias, with a deprecation warning. A reference
that names no model is one usage error line (exit 4), as for ``--dp-impl``.
"""

import pytest

from harness.model_specs import ModelSpecError, model_spec
from harness.models import MEMORY_ZOO, ZOO

models_key = pytest.StashKey[list[str]]()

ZOO_HELP = (
    "zoo(*names): the zoo models a claim runs when no --model is given (default: the whole "
    "zoo); with --model it runs the user's models instead"
)
DEPRECATED = "--memory-model is now --model (the same models run every claim of the suites)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness")
    group.addoption(
        "--model",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="run the claims of suites/dp, suites/ddp and suites/memory that run a model on this "
        "model instead of the zoo: a harness.models.ModelSpec, or a zero-argument callable "
        "returning one (a zoo name such as mlp works too). Repeatable.",
    )
    group.addoption(
        "--memory-model", action="append", default=[], metavar="MODULE:ATTR", help=DEPRECATED
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    from harness.environment import prepare_environment

    config.addinivalue_line("markers", ZOO_HELP)
    # The user's model modules are imported here and may touch CUDA on import: the process
    # environment (CUDA_DEVICE_ORDER first) must be in place before.
    prepare_environment()
    old = list(config.getoption("memory_model"))
    if old:
        config.issue_config_time_warning(pytest.PytestDeprecationWarning(DEPRECATED), 2)
    refs = list(dict.fromkeys([*config.getoption("model"), *old]))
    option = "--model" if not old else "--model/--memory-model"
    for ref in refs:
        try:
            model_spec(ref, option)
        except ModelSpecError as err:
            raise pytest.UsageError(str(err)) from None
    config.stash[models_key] = refs


def chosen_models(config: pytest.Config) -> list[str]:
    """The ``--model`` references, in order; empty when the zoo runs."""
    return config.stash.get(models_key, [])


def model_id(ref: str) -> str:
    """A test id for a model: the spec's name."""
    return ref if ref in ZOO else model_spec(ref).name


@pytest.hookimpl(trylast=True)  # after the test's own parametrisations: ids end in the model
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    chosen = chosen_models(metafunc.config)
    if "model" in metafunc.fixturenames and not parametrized(metafunc, "model"):
        marker = metafunc.definition.get_closest_marker("zoo")
        refs = chosen or (list(marker.args) if marker else list(ZOO))
        metafunc.parametrize("model", refs, ids=model_id)
    if "memory_model" in metafunc.fixturenames and not parametrized(metafunc, "memory_model"):
        metafunc.parametrize("memory_model", chosen or list(MEMORY_ZOO), ids=model_id)


def parametrized(metafunc: pytest.Metafunc, name: str) -> bool:
    """Whether the test parametrises ``name`` itself (``@pytest.mark.parametrize``)."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",")]
        if name in names:
            return True
    return False
