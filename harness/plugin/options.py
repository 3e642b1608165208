"""``--devices``, ``--dp-impl`` and ``--ddp-impl``: parsed once, at configure time, into
``config.stash``; a bad value is a usage error (exit 4) naming it."""

import sys

import pytest

from harness.devices import DeviceSet, DeviceSpecError, parse_devices
from harness.environment import prepare_environment
from harness.impl import DDPImpl, DPImpl, ImplSpecError, resolve_ddp_impl, resolve_dp_impl

devices_key = pytest.StashKey[DeviceSet]()
dp_impl_key = pytest.StashKey[DPImpl]()
ddp_impl_key = pytest.StashKey[DDPImpl]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpu harness", "GPU-cluster test harness")
    group.addoption(
        "--devices",
        default="auto",
        metavar="SPEC",
        help="devices to test on: auto (all visible GPUs, else cpu:4), cpu:N (N virtual CPU "
        "devices), cuda (all visible GPUs), cuda:0,1,3 (those GPUs), cuda:0,0 (one GPU twice). "
        "Default: auto.",
    )
    group.addoption(
        "--dp-impl",
        default="reference",
        metavar="IMPL",
        help="DataParallel implementation under test: reference (harness.parallel), torch "
        "(torch.nn.DataParallel, CUDA only) or MODULE:ATTR, a callable "
        "(module, device_ids, output_device, dim) -> nn.Module. Default: reference.",
    )
    group.addoption(
        "--ddp-impl",
        default="reference",
        metavar="IMPL",
        help="DistributedDataParallel implementation under test, created inside each rank: "
        "reference (harness.parallel), torch (torch.nn.parallel.DistributedDataParallel, CPU "
        "with gloo or CUDA) or MODULE:ATTR, a callable (module, device_ids=..., **kwargs) -> "
        "nn.Module like torch's DDP. Default: reference.",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # User factories (MODULE:ATTR) live in the project under test, whichever way pytest was started.
    for path in (config.invocation_params.dir, config.rootpath):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    chosen_devices(config)
    dp_impl = ddp_impl = None
    try:
        dp_impl = resolve_dp_impl(config.getoption("dp_impl"), chosen_devices(config))
        ddp_impl = resolve_ddp_impl(config.getoption("ddp_impl"))
    except ImplSpecError as err:
        raise pytest.UsageError(str(err)) from None
    config.stash[dp_impl_key] = dp_impl
    config.stash[ddp_impl_key] = ddp_impl


def chosen_devices(config: pytest.Config) -> DeviceSet:
    """The devices ``--devices`` chose, parsed once (a bad spec is a ``pytest.UsageError``).

    The process environment the harness needs (``harness.environment``) is set first: counting
    GPUs may initialise the CUDA driver, which reads ``CUDA_DEVICE_ORDER`` then.
    """
    devices = config.stash.get(devices_key, None)
    if devices is None:
        prepare_environment()
        try:
            devices = parse_devices(config.getoption("devices"))
        except DeviceSpecError as err:
            raise pytest.UsageError(str(err)) from None
        config.stash[devices_key] = devices
    return devices
