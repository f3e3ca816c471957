"""Every link in the README and docs/ leads somewhere, and every page can be reached.

Pages were once written and then linked from nowhere (reliability.md, the design notes), and one
pointed outside the repository; a reader following the README never found them. This checks the
committed Markdown the way a reader walks it: relative links must name an existing file (and an
existing heading when they carry an anchor), none may leave the repository, and every page under
docs/ must be reachable from README.md.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def pages() -> list[Path]:
    found = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    found += sorted((REPO / "charts").rglob("README.md"))
    return [p for p in found if p.is_file()]


def prose(path: Path) -> list[str]:
    """The lines outside fenced code blocks: a `[x](y)` inside a code sample is not a link."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose(path):
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    out: list[str] = []
    for line in prose(path):
        line = re.sub(r"`[^`]*`", "", line)
        for m in LINK.finditer(line):
            out.append(m.group(1) or m.group(2))
    return out


def resolve(page: Path, target: str) -> tuple[Path, str]:
    file, _, anchor = target.partition("#")
    return ((page.parent / file).resolve() if file else page), anchor


def test_relative_links_resolve_inside_the_repository() -> None:
    broken: list[str] = []
    for page in pages():
        for target in links(page):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            dest, anchor = resolve(page, target)
            where = f"{page.relative_to(REPO)} -> {target}"
            if REPO not in dest.parents and dest != REPO:
                broken.append(f"{where}: leaves the repository")
            elif not dest.exists():
                broken.append(f"{where}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where}: no heading #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme() -> None:
    reached: set[Path] = set()
    todo = [REPO / "README.md"]
    while todo:
        page = todo.pop()
        if page in reached:
            continue
        reached.add(page)
        for target in links(page):
            if re.match(r"^[a-z]+:", target):
                continue
            dest, _ = resolve(page, target)
            if dest.suffix == ".md" and dest.is_file():
                todo.append(dest)
    orphans = [str(p.relative_to(REPO)) for p in sorted((REPO / "docs").rglob("*.md")) if p not in reached]
    assert not orphans, f"docs pages no link reaches from README.md: {orphans}"


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    """The checker itself: a missing file and a missing heading are both reported."""
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nope)\n```\n[d](ignored.md)\n```\n")
    assert links(page) == ["missing.md", "#title", "#nope"]
    assert anchors(page) == {"title"}


MACHINE_PATH = re.compile(r"(?:\.\./)+shared/|/work/|/root/")


def test_no_page_names_a_machine_path_or_a_file_outside_the_checkout() -> None:
    """A path on the author's machine (or beside the checkout) means nothing to a reader."""
    hits = [
        f"{page.relative_to(REPO)}:{n}: {line.strip()}"
        for page in pages()
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]
    assert not hits, "machine paths in the docs:\n" + "\n".join(hits)
