"""docs/benchmarks.md, where the benchmarks write their figures."""

from __future__ import annotations

from pathlib import Path

REPORT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def replace_section(heading: str, lines: list[str], before: str = "## Over gRPC") -> None:
    """Replace the report's section under heading with lines, or add it before the
    section `before` (where `python -m bench` puts it)."""
    text = REPORT.read_text()
    # One blank line between sections, however many the lines end with.
    section = "\n".join(lines).rstrip("\n") + "\n\n"
    start = text.find(heading)
    if start < 0:
        at = text.find(before)
        at = at if at >= 0 else len(text)
        text = text[:at] + section + text[at:]
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    text = text.rstrip("\n") + "\n"
    REPORT.write_text(text)
