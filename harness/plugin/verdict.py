"""The verdict of each ``--model`` model (``harness.verdict``): one block per model at the end
of the terminal summary, and ``verdict.<model>.<claim>`` suite properties in the JUnit file.

Each test of a model is tagged with the ``model`` property at collection, so its reports
carry the model back from xdist workers; the process that writes the summary folds them.
"""

import pytest

from harness import properties
from harness.model_specs import model_spec, traits
from harness.plugin.junit import add_suite_properties, xdist_worker
from harness.plugin.models import chosen_models, model_id
from harness.verdict import Verdicts

MODEL_ARGUMENTS = ("model", "memory_model")


def pytest_configure(config: pytest.Config) -> None:
    models = chosen_models(config)
    if models and not xdist_worker(config):
        collector = VerdictCollector({model_id(ref): notes(ref) for ref in models})
        config.pluginmanager.register(collector, "harness-verdict")


def notes(ref: str) -> list[str]:
    dropout = traits(model_spec(ref)).dropout
    if not dropout:
        return []
    return [
        "equivalence claims compare the model with its dropout layers switched off in both "
        f"copies ({', '.join(dropout)}): random masks cannot be compared"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not chosen_models(config):
        return
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        ref = next((params[name] for name in MODEL_ARGUMENTS if name in params), None)
        if ref is not None:
            item.user_properties.append((properties.MODEL, model_id(ref)))


def report_message(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2])
    crash = getattr(report.longrepr, "reprcrash", None)
    return crash.message if crash is not None else str(report.longrepr or "")


class VerdictCollector:
    """Folds test reports into verdicts; in the process that writes the summary and JUnit."""

    def __init__(self, models: dict[str, list[str]]) -> None:
        self.verdicts = Verdicts(models)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        counted = report.when == "call" or (report.when == "setup" and not report.passed)
        if not (counted or (report.when == "teardown" and report.failed)):
            return
        found = dict((str(k), str(v)) for k, v in report.user_properties)
        model = found.get(properties.MODEL)
        if model is not None:
            self.verdicts.add(report.nodeid, report.outcome, report_message(report), found, model)

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes the file
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        add_suite_properties(
            session.config,
            [prop for model in self.verdicts.models for prop in self.verdicts.properties(model)],
        )

    def pytest_terminal_summary(self, terminalreporter) -> None:
        terminalreporter.section("model verdict")
        for model in self.verdicts.models:
            for line in self.verdicts.lines(model):
                terminalreporter.write_line(line)
