"""bench/sections.py: a benchmark's section of another benchmark's results file is replaced
in place, appended when new, and survives that file being regenerated."""

from __future__ import annotations

from pathlib import Path

from bench.sections import kept_sections, replace_section


def test_a_section_is_appended_replaced_and_kept(tmp_path: Path) -> None:
    md = tmp_path / "mnist.md"
    md.write_text("# MNIST\n\ntable\n")
    replace_section(md, "handwriting", "## Digits\n\nfirst\n")
    assert md.read_text().startswith("# MNIST\n\ntable\n\n<!-- section: handwriting -->")
    replace_section(md, "handwriting", "## Digits\n\nsecond\n")
    text = md.read_text()
    assert "second" in text and "first" not in text and text.count("## Digits") == 1
    # bench_mnist regenerates its part and keeps the section
    md.write_text("# MNIST\n\nnew table\n" + kept_sections(md))
    text = md.read_text()
    assert "new table" in text and "second" in text and text.count("<!-- section:") == 1
    assert kept_sections(tmp_path / "missing.md") == ""
