"""Named sections of a results file that another benchmark writes: `replace_section` puts
one between marker comments (replacing an older copy, else appending it), and
`kept_sections` returns them from a file about to be rewritten, so that a benchmark
regenerating the rest of the file keeps them."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["kept_sections", "replace_section"]

_SECTION = re.compile(r"<!-- section: ([\w-]+) -->.*?<!-- end of section: \1 -->\n?", re.S)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- section: {name} -->", f"<!-- end of section: {name} -->"


def replace_section(path: Path, name: str, text: str) -> None:
    begin, end = _markers(name)
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old)
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    path.write_text(new)


def kept_sections(path: Path) -> str:
    """Every marked section of `path`, markers included ('' when none or no file)."""
    if not path.exists():
        return ""
    found = [m.group(0).rstrip("\n") + "\n" for m in _SECTION.finditer(path.read_text())]
    return "".join("\n" + block for block in found)
