"""Text made safe for Markdown tables, for every report that writes them (``summary --format
md``, ``diff --format md``): what a node or a test wrote must not break a table or inject HTML
into the page a CI system renders."""

from typing import Any


def cell(text: Any, limit: int | None = None) -> str:
    """Text safe inside a Markdown table cell: no HTML, no column breaks, one line (line breaks
    become ``<br>``); cut after ``limit`` characters."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + " …"
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, safe)
    return "<br>".join(line.strip() for line in text.strip().splitlines()) or " "
