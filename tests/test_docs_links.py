"""Every relative link and image in the project's Markdown (README.md, docs/, the envs' READMEs) points to a file that exists and, when it
names an anchor, to a heading of that file (GitHub's anchor rules), so moving a section to docs/
cannot leave a reader at a dead link."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
         *sorted(page for folder in ("data", "opid_envs", "opid_train", "wrappers", "scripts")
                 for page in (ROOT / folder).rglob("README.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and inline code, where a link is a link."""
    markdown = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", markdown)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    ids = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M),
                              flags=re.M):
        slug = github_anchor(heading)
        ids.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target, flags=re.I)]  # http:, https:, mailto: ...


def test_the_anchor_rule_matches_githubs():
    assert github_anchor("The main job (`make run`)") == "the-main-job-make-run"
    assert github_anchor("Does OPID beat GRPO here? (ALFWorld)") == "does-opid-beat-grpo-here-alfworld"
    assert github_anchor("The main job's calibration") == "the-main-jobs-calibration"


def test_the_link_finder_sees_links_and_images_but_not_code():
    text = "[a](x.md) ![b](img/y.png) `[c](not-a-link.md)` [d](https://example.org) [e](#here)"
    found = [t for t in LINK.findall(prose(text)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    assert found == ["x.md", "img/y.png", "#here"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path, _, anchor = unquote(target).partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.name}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_readme_links_the_studies_and_benchmarks():
    links = relative_links(ROOT / "README.md")
    assert any(t.startswith("docs/STUDIES.md") for t in links)
    assert any(t.startswith("docs/BENCHMARKS.md") for t in links)
    assert "docs/RESULTS.md" in links
