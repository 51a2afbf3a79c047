"""The layer rule of plugins/module_utils (docs/architecture.md): a module
imports only from its own package or from a package of a lower layer. Read
from the source with ast, so function-local imports count too."""

import ast
import os

import pytest

from ansible_collections.vmsan.network.plugins import module_utils

ROOT = os.path.dirname(module_utils.__file__)
PREFIX = "ansible_collections.vmsan.network.plugins.module_utils"
RANK = {package: rank for rank, packages in enumerate(module_utils.LAYERS) for package in packages}


def _modules():
    for package in sorted(RANK):
        folder = os.path.join(ROOT, package)
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                yield package, os.path.join(folder, name)


def imported_packages(path, package):
    """The module_utils packages that the module at PATH (in PACKAGE) imports."""
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(package)
            elif node.level == 2:
                # from ..pkg import x / from ..pkg.mod import x / from .. import pkg
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.level > 2:
                found.add("<above module_utils>")
            elif node.module and node.module.startswith(PREFIX):
                rest = node.module[len(PREFIX):].lstrip(".")
                if rest:
                    found.add(rest.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PREFIX + "."):
                    found.add(alias.name[len(PREFIX) + 1:].split(".")[0])
    return found


def violations(path, package):
    out = []
    for target in sorted(imported_packages(path, package)):
        if target == package:
            continue
        if target not in RANK:
            out.append("%s imports %s, which is not a layer" % (path, target))
        elif RANK[target] >= RANK[package]:
            out.append("%s (layer %s) imports %s, which is not below it" % (path, package, target))
    return out


def test_every_module_is_in_a_layer():
    """Only the package marker lives at the top, and layers are one level deep."""
    top = [n for n in os.listdir(ROOT) if n.endswith(".py") and n != "__init__.py"]
    assert top == []
    for entry in os.listdir(ROOT):
        full = os.path.join(ROOT, entry)
        if os.path.isdir(full) and entry != "__pycache__":
            assert entry in RANK, "%s is a folder but not a layer" % entry
            nested = [n for n in os.listdir(full) if os.path.isdir(os.path.join(full, n)) and n != "__pycache__"]
            assert nested == [], "layers are one level deep: %s" % nested


@pytest.mark.parametrize("package,path", list(_modules()), ids=lambda v: os.path.basename(v) if "/" in str(v) else v)
def test_imports_never_climb(package, path):
    assert violations(path, package) == []


def test_every_package_says_it_is_private():
    for package in RANK:
        doc = ast.get_docstring(ast.parse(open(os.path.join(ROOT, package, "__init__.py")).read()))
        assert doc and "Private to the collection" in doc, package


def test_the_rule_catches_a_climb(tmp_path):
    """The checker itself: an adapter that imports the orchestrator is caught,
    as relative and as absolute import, at module level and inside a function."""
    for source in ("from ..lifecycle import manager\n",
                   "def f():\n    from ..lifecycle.manager import Manager\n",
                   "from %s.faces import cli\n" % PREFIX,
                   "from .. import lifecycle\n"):
        bad = tmp_path / "bad.py"
        bad.write_text(source)
        assert violations(str(bad), "kernel"), source
    ok = tmp_path / "ok.py"
    ok.write_text("from ..model import errors\nfrom . import netns\n")
    assert violations(str(ok), "kernel") == []


def test_the_host_role_installs_every_layer():
    """roles/vmsan_host copies the core onto the host folder by folder; a
    layer it does not know would be missing there."""
    import yaml
    role_vars = os.path.join(ROOT, "..", "..", "roles", "vmsan_host", "vars", "main.yml")
    with open(role_vars) as handle:
        listed = yaml.safe_load(handle)["vmsan_host_core_layers"]
    assert sorted(listed) == sorted(RANK)
