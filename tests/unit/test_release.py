"""What a release is made of agrees with itself: galaxy.yml's version is the
newest section of CHANGELOG.md, no module claims to be newer than it, the
docs name the tarball that version builds, released notes stay as released,
and the resolver's unit file exists once."""

import hashlib
import os
import re

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# A released section is history: its text does not change after the release
# (a line added under it by a merge belongs to the unreleased section).
# sha256 of each released section's text, heading line excluded.
RELEASED = {
    "1.0.0": "0bbb8a43f29d7937317e3eaca38e6b15ea64411a6bb16a340ee82e9dc74f802e",
}

HEADING = re.compile(r"^## (\d+\.\d+\.\d+) \((unreleased|\d{4}-\d{2}-\d{2})\)$")


def read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as handle:
        return handle.read()


def galaxy_version():
    return yaml.safe_load(read("galaxy.yml"))["version"]


def changelog_sections():
    """[(version, date or "unreleased", body text)] in file order."""
    sections = []
    for line in read("CHANGELOG.md").splitlines(keepends=True):
        if line.startswith("## "):
            match = HEADING.match(line.rstrip("\n"))
            assert match, "CHANGELOG.md: a section heading reads '## X.Y.Z (unreleased|YYYY-MM-DD)', not %r" % line
            sections.append([match.group(1), match.group(2), ""])
        elif sections:
            sections[-1][2] += line
    return [tuple(s) for s in sections]


def as_tuple(version):
    return tuple(int(part) for part in str(version).split("."))


def test_galaxy_version_is_the_newest_changelog_section():
    sections = changelog_sections()
    assert sections, "CHANGELOG.md has no '## X.Y.Z (...)' section"
    assert sections[0][0] == galaxy_version(), (
        "galaxy.yml says %s, the newest CHANGELOG.md section %s" % (galaxy_version(), sections[0][0]))


def test_changelog_sections_go_from_new_to_old_and_only_the_newest_is_unreleased():
    sections = changelog_sections()
    versions = [as_tuple(v) for v, _, _ in sections]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions)
    assert [v for v, date, _ in sections[1:] if date == "unreleased"] == []


def test_released_sections_are_unchanged():
    for version, date, body in changelog_sections():
        if date == "unreleased":
            continue
        assert version in RELEASED, "release %s: record its digest in RELEASED" % version
        digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
        assert digest == RELEASED[version], (
            "CHANGELOG.md %s is released and changed: new lines go under the unreleased section" % version)


def test_no_module_is_newer_than_the_collection():
    modules = os.path.join(REPO, "plugins", "modules")
    for name in sorted(os.listdir(modules)):
        if not name.endswith(".py"):
            continue
        text = read("plugins", "modules", name)
        match = re.search(r'^DOCUMENTATION = r?"""(.*?)"""', text, re.S | re.M) or re.search(
            r"^DOCUMENTATION = r?'''(.*?)'''", text, re.S | re.M)
        assert match, "%s has no DOCUMENTATION" % name
        added = yaml.safe_load(match.group(1))["version_added"]
        assert as_tuple(added) <= as_tuple(galaxy_version()), "%s: version_added %s > %s" % (
            name, added, galaxy_version())


def test_docs_name_the_tarball_of_this_version():
    named = set(re.findall(r"vmsan-network-(\d+\.\d+\.\d+)\.tar\.gz", read("docs", "ansible.md")))
    assert named == {galaxy_version()}


def test_the_resolver_unit_exists_once_where_the_host_role_installs_it_from():
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in (".git", ".venv", ".cache", "build", "__pycache__")]
        found += [os.path.relpath(os.path.join(root, f), REPO) for f in files if f == "vmsan-resolver.service"]
    assert found == [os.path.join("roles", "vmsan_host", "files", "vmsan-resolver.service")]
