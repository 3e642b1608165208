import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.devices import parse_devices
from harness.impl import (
    DDPImpl,
    ImplSpecError,
    ddp_factory,
    load_callable,
    resolve_ddp_impl,
    resolve_dp_impl,
)
from harness.plugin import options
from tests.pytest_run import assert_one_usage_error, run_pytest

CPU4 = parse_devices("cpu:4")
CUDA2 = parse_devices("cuda:0,0", cuda_count=1)


def make(module, device_ids, output_device, dim):
    return module


class Factories:
    make = staticmethod(make)


NOT_CALLABLE = 42


def test_reference():
    from harness.parallel import DataParallel

    impl = resolve_dp_impl("reference", CPU4)
    assert impl.name == "reference"
    assert impl.factory is DataParallel


def test_torch_on_cuda():
    impl = resolve_dp_impl("torch", CUDA2)
    assert impl.name == "torch"
    assert impl.factory is nn.DataParallel


def test_torch_refused_on_cpu():
    with pytest.raises(ImplSpecError) as excinfo:
        resolve_dp_impl("torch", CPU4)
    message = str(excinfo.value)
    assert message.startswith("--dp-impl torch: torch.nn.DataParallel needs CUDA devices")
    assert "cpu:4" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("spec", "factory"),
    [
        (f"{__name__}:make", make),
        (f"{__name__}:Factories.make", make),
        ("torch.nn:DataParallel", nn.DataParallel),
    ],
)
def test_module_attr(spec, factory):
    impl = resolve_dp_impl(spec, CPU4)
    assert impl.name == spec
    assert impl.factory is factory


def test_module_attr_factory_is_usable():
    impl = resolve_dp_impl(f"{__name__}:make", CPU4)
    module = nn.Linear(2, 2)
    assert impl.factory(module, CPU4.device_ids, None, 0) is module


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("nocolon", "expected reference, torch or MODULE:ATTR"),
        ("Torch", "expected reference, torch or MODULE:ATTR"),
        ("", "expected reference, torch or MODULE:ATTR"),
        (":make", "expected reference, torch or MODULE:ATTR"),
        (f"{__name__}:", "expected reference, torch or MODULE:ATTR"),
        ("no_such_module_xyz:make", "importing 'no_such_module_xyz' failed: ModuleNotFoundError"),
        (f"{__name__}:missing", f"{__name__!r} has no attribute 'missing'"),
        (f"{__name__}:Factories.missing", "has no attribute 'Factories.missing'"),
        (f"{__name__}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
    ],
)
def test_bad_module_attr(spec, problem):
    with pytest.raises(ImplSpecError) as excinfo:
        resolve_dp_impl(spec, CPU4)
    message = str(excinfo.value)
    assert message.startswith(f"--dp-impl {spec!r}: ")
    assert problem in message
    assert "\n" not in message


def test_module_that_fails_to_import(tmp_path, monkeypatch):
    (tmp_path / "broken_factory_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(tmp_path)
    with pytest.raises(ImplSpecError, match="'broken_factory_mod' failed: RuntimeError: boom"):
        resolve_dp_impl("broken_factory_mod:make", CPU4)


def test_load_callable_names_the_option():
    with pytest.raises(ImplSpecError, match=r"^--ddp-impl 'bad': "):
        load_callable("bad", "--ddp-impl")


def test_impl_spec_error_is_a_value_error():
    assert issubclass(ImplSpecError, ValueError)


def test_resolving_does_not_initialise_cuda():
    resolve_dp_impl("torch", CUDA2)
    assert not torch.cuda.is_initialized()


# -- --ddp-impl -------------------------------------------------------------------


def make_ddp(module, device_ids=None, **kwargs):
    return module


def test_ddp_reference():
    from harness.parallel import DistributedDataParallel

    impl = resolve_ddp_impl("reference")
    assert impl == DDPImpl("reference", DistributedDataParallel)
    assert ddp_factory("reference") is DistributedDataParallel


def test_ddp_torch_is_allowed_without_cuda():
    impl = resolve_ddp_impl("torch")
    assert impl == DDPImpl("torch", nn.parallel.DistributedDataParallel)
    assert not torch.cuda.is_initialized()


@pytest.mark.parametrize(
    ("spec", "factory"),
    [
        (f"{__name__}:make_ddp", make_ddp),
        ("torch.nn.parallel:DistributedDataParallel", nn.parallel.DistributedDataParallel),
    ],
)
def test_ddp_module_attr(spec, factory):
    assert resolve_ddp_impl(spec) == DDPImpl(spec, factory)
    assert ddp_factory(spec) is factory


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("Reference", "expected reference, torch or MODULE:ATTR"),
        ("", "expected reference, torch or MODULE:ATTR"),
        ("no_such_module_xyz:make", "importing 'no_such_module_xyz' failed: ModuleNotFoundError"),
        (f"{__name__}:missing", f"{__name__!r} has no attribute 'missing'"),
        (f"{__name__}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a callable"),
    ],
)
def test_ddp_bad_spec_is_one_line(spec, problem):
    with pytest.raises(ImplSpecError) as excinfo:
        ddp_factory(spec)
    message = str(excinfo.value)
    assert message.startswith(f"--ddp-impl {spec!r}: ")
    assert problem in message
    assert "\n" not in message


def test_ddp_without_torch_distributed_is_refused(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_available", lambda: False)
    for spec in ("reference", "torch"):
        with pytest.raises(ImplSpecError, match=f"^--ddp-impl {spec}: this torch build has no"):
            resolve_ddp_impl(spec)


def fake_config(tmp_path, **options):
    values = {
        "devices": "cpu:2",
        "dp_impl": "reference",
        "ddp_impl": "reference",
        "fake_node": None,
        **options,
    }
    return SimpleNamespace(
        invocation_params=SimpleNamespace(dir=tmp_path),
        rootpath=tmp_path,
        getoption=values.__getitem__,
        stash=pytest.Stash(),
    )


def test_ddp_option_is_validated_and_stashed_at_configure(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    config = fake_config(tmp_path, ddp_impl=f"{__name__}:make_ddp")
    options.pytest_configure(config)
    assert config.stash[options.ddp_impl_key] == DDPImpl(f"{__name__}:make_ddp", make_ddp)
    assert config.getoption("ddp_impl") == f"{__name__}:make_ddp"


def test_bad_ddp_option_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(pytest.UsageError) as excinfo:
        options.pytest_configure(fake_config(tmp_path, ddp_impl="nocolon"))
    assert str(excinfo.value) == "--ddp-impl 'nocolon': expected reference, torch or MODULE:ATTR"


def test_bad_ddp_option_exits_4_with_one_line(tmp_path):
    done = run_pytest([str(tmp_path), "--ddp-impl", "nocolon"])
    expected = "ERROR: --ddp-impl 'nocolon': expected reference, torch or MODULE:ATTR"
    assert_one_usage_error(done, expected)


def configured(tmp_path, ddp_impl):
    config = fake_config(tmp_path, ddp_impl=ddp_impl)
    options.pytest_configure(config)
    return config


def test_ddp_impl_in_header_and_suite_properties(tmp_path, monkeypatch):
    from harness.plugin import header, junit

    monkeypatch.setattr(sys, "path", list(sys.path))
    config = configured(tmp_path, "torch")
    assert "ddp-impl: torch" in header.pytest_report_header(config)
    assert ("ddp_impl", "torch") in junit.pytest_harness_suite_properties(config)


def test_ddp_impl_per_test_property_on_distributed_tests(tmp_path, monkeypatch):
    from harness.plugin import junit

    monkeypatch.setattr(sys, "path", list(sys.path))

    class Item:
        def __init__(self, marker=None, fixtures=()):
            self.marker, self.fixturenames, self.user_properties = marker, list(fixtures), []

        def get_closest_marker(self, name):
            return self.marker if name == "distributed" else None

    marked, with_env, plain = Item(marker=object()), Item(fixtures=["dist_env"]), Item()
    config = configured(tmp_path, "reference")
    junit.pytest_collection_modifyitems(config, [marked, with_env, plain])
    for item in (marked, with_env):
        assert ("ddp_impl", "reference") in item.user_properties
    assert [name for name, _ in plain.user_properties] == ["devices", "dp_impl"]
