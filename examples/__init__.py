"""User models as a model developer writes them, each a ``harness.models.ModelSpec`` for
``pytest suites/dp suites/ddp --model examples.<module>:spec`` (docs/model-developers.md)."""
