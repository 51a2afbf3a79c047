"""The docs stand on their own: nothing in the repository cites a document
that is not in it, every citation of docs/contract.md names one of its
sections, and links between the pages lead somewhere."""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP_DIRS = {".git", ".venv", ".cache", "output", "build", "__pycache__"}
TEXT_SUFFIXES = (".py", ".md", ".yml", ".yaml", ".j2", ".sh", ".txt", ".cfg", ".service", ".toml", ".ini")

# The specification the project was started from lives outside the
# repository: citing it sends a reader to a file they do not have.
OUTSIDE = re.compile(r"DESIGN(?:\.md)?,? (?:section|sections|\d)|DESIGN\.md|SEED-networking-guide|/work/shared")
# docs/contract.md, "Section name"  (one or more names: "A" and "B", "A", "B")
CITATION = re.compile(r'docs/contract\.md(?:\s*\(|,)\s*((?:"[^"]+"(?:\s*(?:,|and)\s*)?)+)')
LINK = re.compile(r"\]\(([^)\s]+)\)")


def repository_text_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith(TEXT_SUFFIXES):
                yield os.path.relpath(os.path.join(root, name), REPO)


def read(path):
    with open(os.path.join(REPO, path), encoding="utf-8", errors="replace") as handle:
        return handle.read()


def headings(path):
    return [line.lstrip("#").strip() for line in read(path).splitlines() if re.match(r"^#{1,6} ", line)]


def anchor(heading):
    """The fragment a Markdown renderer (GitHub's rules) gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return text.replace(" ", "-")


def test_nothing_cites_a_document_outside_the_repository():
    me = os.path.relpath(os.path.abspath(__file__), REPO)
    found = []
    for path in repository_text_files():
        if path == me:
            continue
        for number, line in enumerate(read(path).splitlines(), 1):
            if OUTSIDE.search(line):
                found.append("%s:%d: %s" % (path, number, line.strip()))
    assert found == [], "cite a page under docs/ (docs/contract.md) instead:\n" + "\n".join(found)


def test_citations_of_the_contract_name_its_sections():
    sections = {h.replace("`", "") for h in headings(os.path.join("docs", "contract.md"))}
    me = os.path.relpath(os.path.abspath(__file__), REPO)
    cited = 0
    wrong = []
    for path in repository_text_files():
        if path == me:
            continue
        text = re.sub(r"\s*\n\s*(?:#\s*|\*\s*)?", " ", read(path))   # citations may wrap lines
        for match in CITATION.finditer(text):
            for name in re.findall(r'"([^"]+)"', match.group(1)):
                cited += 1
                if name not in sections:
                    wrong.append("%s: %r" % (path, name))
    assert cited > 10, "the citation pattern found almost nothing: is it still right?"
    assert wrong == [], "not a section of docs/contract.md:\n" + "\n".join(wrong)


@pytest.mark.parametrize("page", ["README.md"] + sorted(
    os.path.join("docs", p) for p in os.listdir(os.path.join(REPO, "docs")) if p.endswith(".md")))
def test_links_between_pages_lead_somewhere(page):
    broken = []
    for target in LINK.findall(read(page)):
        if re.match(r"^[a-z]+:", target):
            continue                                    # a URL, not a page of ours
        file_part, _, fragment = target.partition("#")
        path = os.path.normpath(os.path.join(os.path.dirname(page), file_part)) if file_part else page
        if not os.path.exists(os.path.join(REPO, path)):
            broken.append(target)
        elif fragment and path.endswith(".md") and fragment not in {anchor(h) for h in headings(path)}:
            broken.append(target)
    assert broken == []


def test_the_readme_lists_every_page_of_the_docs():
    readme = read("README.md")
    pages = sorted(p for p in os.listdir(os.path.join(REPO, "docs")) if p.endswith(".md"))
    assert [p for p in pages if "(docs/%s)" % p not in readme] == []
