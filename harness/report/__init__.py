"""Report tools: read JUnit files from many nodes and ranks into one model, merge them, summarise
them for people, and diff two nights. ``python -m harness.report --help``."""
