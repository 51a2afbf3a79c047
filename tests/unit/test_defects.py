"""Regression tests of defects a review found (issue 12). Each was red on
the code before its fix."""

import ast
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.vmsan.network.plugins import module_utils
from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.state import StateStore

ROOT = os.path.dirname(module_utils.__file__)
REPO = os.path.abspath(os.path.join(ROOT, "..", ".."))
TESTS = os.path.join(REPO, "tests")


def test_ipset_err_exist_is_the_kernels():
    """IPSET_ERR_EXIST was 4097 (the kernel's IPSET_ERR_PROTOCOL)."""
    kernel_ipset = pytest.importorskip("pyroute2.netlink.nfnetlink.ipset")
    from ansible_collections.vmsan.network.plugins.module_utils.kernel import ipsets
    assert ipsets.IPSET_ERR_EXIST == kernel_ipset.IPSET_ERR_EXIST


def _corrupt_store(tmp_path):
    store = StateStore(str(tmp_path))
    store.ensure()
    (tmp_path / "vms" / "broken.json").write_text("{not json")
    return store


def test_one_corrupt_state_file_does_not_break_list(tmp_path):
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Manager
    _corrupt_store(tmp_path)
    listed = Manager(str(tmp_path)).list()
    assert [getattr(entry, "id", None) for entry in listed] == ["broken"]
    assert "corrupt" in listed[0].error


def test_one_corrupt_state_file_does_not_block_port_checks(tmp_path):
    pytest.importorskip("pyroute2")
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import ports
    from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
    store = _corrupt_store(tmp_path)
    warnings = ports.check_conflicts(store, "new", inputs.port_list("published_ports", "48123"))
    assert any("broken.json" in w for w in warnings)


def _module_level_names(path):
    tree = ast.parse(open(path).read(), path)
    for node in tree.body:
        targets = []
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            targets = [node.name]
        elif isinstance(node, ast.Assign):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.Try):     # try: import x; HAS_X = True
            for part in node.body + [n for h in node.handlers for n in h.body]:
                if isinstance(part, ast.Assign):
                    targets += [t.id for t in part.targets if isinstance(t, ast.Name)]
        for name in dict.fromkeys(targets):
            if not (name.startswith("__") or name.isupper() and name in ("DOCUMENTATION", "EXAMPLES", "RETURN")):
                yield name


def _python_files():
    for top in ("plugins", "tests", "bench", "extensions", "demo", "scripts"):
        for folder, _dirs, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if name.endswith(".py") and name != os.path.basename(__file__):
                    yield os.path.join(folder, name)


def _names_read(path):
    """Every name the module at PATH reads: loaded names, attributes, and
    names imported from elsewhere."""
    try:
        tree = ast.parse(open(path).read(), path)
    except SyntaxError:
        return set()
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            found.update(alias.name for alias in node.names)
    return found


def test_no_dead_names_in_the_core():
    """A module-level name of the core that no code reads is dead:
    STATE_DIR_OPTION, faults.POINTS, policy.learned_addresses, the HAS_*
    flags nobody checks."""
    read = set()
    for path in _python_files():
        read |= _names_read(path)
    dead = []
    for package in sorted(os.listdir(ROOT)):
        folder = os.path.join(ROOT, package)
        if not os.path.isdir(folder) or package == "__pycache__":
            continue
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py"):
                dead += ["%s/%s: %s" % (package, name, symbol)
                         for symbol in _module_level_names(os.path.join(folder, name)) if symbol not in read]
    assert dead == []


def test_tests_skip_on_the_library_not_on_a_module_that_swallows_its_import_error():
    """pytest.importorskip of a core module that catches its library's
    ImportError itself can never skip: the import succeeds, and the tests
    then fail on the missing library. Skip on the library instead."""
    offenders = []
    for folder, _dirs, files in os.walk(TESTS):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(folder, name)).read()
                for match in re.finditer(r"importorskip\(\s*[\"']([\w.]+)[\"']", text):
                    if ".plugins.module_utils." in match.group(1):
                        offenders.append("%s: %s" % (name, match.group(1)))
    assert offenders == []


def test_core_modules_that_need_a_library_say_so_when_used_without_it():
    """With python-iptables missing, the iptables adapter still imports (the
    Ansible sanity import test needs that) but using it raises the project's
    error naming the library, not a NameError."""
    code = ("import sys; sys.modules['iptc'] = None\n"
            "from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptables\n"
            "from ansible_collections.vmsan.network.plugins.module_utils.model.errors import VmsanError\n"
            "try:\n    iptables.open_table('filter')\n"
            "except VmsanError as exc:\n    print('VmsanError', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("VmsanError") and "python-iptables" in done.stdout
