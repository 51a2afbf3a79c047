# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the vmsan modules share: the checks before the core runs
(``prepared_module``), the single-VM modules' main (``module_main``: the
checks, the call, the result), the settings of a VM as options
(``VM_OPTIONS``, ``vm_settings``: vmsan_vm and each VM of vmsan_vms), the
mapping of core errors to ``fail_json`` in Ansible's vocabulary, and the
rendering of a core result (facts, changes, diff). Their common options are
documented once in ``plugins/doc_fragments/vmsan.py``; the fleet module's
own main is faces/ansible_fleet.py.

The modules parse their options into model values and say which core call
to make; no decision about the kernel is made here or there.
"""

from __future__ import absolute_import, division, print_function

import importlib
import json
import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError, VmsanError
from ansible_collections.vmsan.network.plugins.module_utils.model.facts import facts
from ansible_collections.vmsan.network.plugins.module_utils.model.records import KEEP
from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as firewall_plan
from ansible_collections.vmsan.network.plugins.module_utils.plan.sets import wanted_sets

__metaclass__ = type

# (import name, distribution name, where to get it)
REQUIRED_LIBRARIES = (
    ("pyroute2", "pyroute2", "https://pypi.org/project/pyroute2/"),
    ("iptc", "python-iptables", "https://pypi.org/project/python-iptables/"),
    ("dnslib", "dnslib", "https://pypi.org/project/dnslib/"),
)

# The options every module has (documented in the doc fragment vmsan.network.vmsan).
COMMON_OPTIONS = {"state_dir": {"type": "path"}}

# The settings of one VM: the options of vmsan_vm and of each item of
# vmsan_vms's config (no defaults here: a setting left out is KEEP, which
# each module resolves its own way).
VM_OPTIONS = dict(
    netns=dict(type="bool"),
    slot=dict(type="int"),
    network_policy=dict(type="str"),
    allowed_domains=dict(type="list", elements="str"),
    allowed_cidrs=dict(type="list", elements="str"),
    denied_cidrs=dict(type="list", elements="str"),
    audit=dict(type="bool"),
    published_ports=dict(type="list", elements="str"),
    bandwidth=dict(type="str"),
    bandwidth_in=dict(type="str"),
    tap_owner=dict(type="str"),
    **{name: dict(type="str") for name in inputs.VM_LIMITS}
)
POLICY_OPTIONS = ("network_policy", "allowed_domains", "allowed_cidrs", "denied_cidrs", "audit")


def _given(value, parse):
    """PARSE(value) when the task gave the option, else KEEP (the VM's value)."""
    return KEEP if value is None else parse(value)


def vm_settings(params):
    """The VM settings among PARAMS (the VM_OPTIONS) as model values, KEEP
    for each one left out. The policy options are one group: giving any of
    them sets the whole policy, as on the CLI."""
    policy = KEEP
    if any(params.get(k) is not None for k in POLICY_OPTIONS):
        policy = inputs.policy(params.get("network_policy"), params.get("allowed_domains"),
                               params.get("allowed_cidrs"), params.get("denied_cidrs"), bool(params.get("audit")))
    return dict(
        netns=KEEP if params.get("netns") is None else params["netns"],
        slot=inputs.slot(params.get("slot")),
        policy=policy,
        ports=_given(params.get("published_ports"), lambda v: inputs.port_list("published_ports", v)),
        bandwidth=_given(params.get("bandwidth"), lambda v: inputs.rate("bandwidth", v)),
        bandwidth_in=_given(params.get("bandwidth_in"), lambda v: inputs.rate("bandwidth_in", v)),
        tap_owner=_given(params.get("tap_owner"), inputs.tap_owner),
        limits=inputs.limits(*(params.get(name) for name in inputs.VM_LIMITS)),
    )


def check_libraries(module, core_import_error=None, importer=importlib.import_module):
    """fail_json with missing_required_lib for the first library that the
    interpreter running the module cannot import; then, if the module could
    not import the core (CORE_IMPORT_ERROR: its traceback), say so."""
    for import_name, distribution, url in REQUIRED_LIBRARIES:
        try:
            importer(import_name)
        except Exception:  # libiptc raises its own errors when the C library is missing
            module.fail_json(msg=missing_required_lib(distribution, url=url),
                             exception=traceback.format_exc())
    if core_import_error:
        module.fail_json(msg="the vmsan core (plugins/module_utils) cannot be imported: %s"
                             % core_import_error.strip().splitlines()[-1],
                         exception=core_import_error)


def check_root(module, module_name, geteuid=os.geteuid):
    if geteuid() != 0:
        module.fail_json(msg="%s must run as root (use become: true): it changes network namespaces, "
                             "links and firewall rules, and even check mode reads the kernel's firewall "
                             "tables, which needs root" % module_name)


def error_message(exc):
    """The text a user sees for a core error: for bad input the CLI's message
    with the Ansible parameter name (``allowed_cidrs: ...``, not ``--allowed-cidr: ...``)."""
    if isinstance(exc, InputError) or getattr(exc, "param", None):
        return exc.render(inputs.label(exc.param, "ansible"))
    if isinstance(exc, VmsanError):
        return str(exc)
    if isinstance(exc, OSError):
        return "system error: %s" % exc
    return "%s: %s" % (type(exc).__name__, exc)


def fail(module, exc):
    """fail_json for an error raised while parsing or in the core."""
    extra = {}
    if isinstance(exc, InputError):
        extra["param"] = inputs.label(exc.param, "ansible")
    else:
        extra["exception"] = traceback.format_exc()
    module.fail_json(msg=error_message(exc), **extra)


def run(module, step):
    """Call STEP(); turn what the core raises into fail_json."""
    try:
        return step()
    except Exception as exc:  # a traceback helps nobody: every error becomes fail_json
        fail(module, exc)


def _manager_class():
    """The core's Manager, imported when a module runs (the core imports
    pyroute2 and python-iptables: check_libraries names what is missing),
    and the traceback of a failed import."""
    try:
        from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Manager
        return Manager, None
    except Exception:  # pylint: disable=broad-exception-caught  # reported by check_libraries
        return None, traceback.format_exc()


def prepared_module(name, options, **spec):
    """The AnsibleModule of OPTIONS (its argument_spec; the common options are
    added; SPEC: AnsibleModule's other arguments) once root and the libraries
    are checked, and the core's Manager class."""
    module = AnsibleModule(argument_spec=dict(options, **COMMON_OPTIONS), supports_check_mode=True, **spec)
    check_root(module, name)
    manager_class, core_import_error = _manager_class()
    check_libraries(module, core_import_error)
    return module, manager_class


def module_main(name, options, parse, act, returned=None):
    """The body of the single-VM modules. OPTIONS: its argument_spec (the
    common options are added); PARSE(params) -> the task's options as model
    values (bad input fails naming the option); ACT(manager, wanted,
    check_mode) -> the core's Result; RETURNED(result) -> extra return
    values."""
    module, manager_class = prepared_module(name, options)
    wanted = run(module, lambda: parse(module.params))
    manager = manager_class(module.params["state_dir"])
    result = run(module, lambda: act(manager, wanted, module.check_mode))
    exit_with(module, result, **(returned(result) if returned else {}))


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def facts_text(record):
    """The facts of RECORD as a diff shows them (empty for None)."""
    if record is None:
        return ""
    return json.dumps(facts(record), indent=2, sort_keys=True) + "\n"


def rules_text(record):
    """iptables-save-like text of the rules the core plans for RECORD (a
    VmRecord; empty for None): its own namespace's rules, then the host
    namespace's."""
    if record is None:
        return ""
    vm_plan, host_plan = firewall_plan.plans_for(record)
    # The CIDR lists live in ipsets that the rules match: show their contents.
    sets = ["# ipset %s: %s" % (firewall_plan.set_name(record.id, role),
                                "learned by the resolver" if networks is None else " ".join(networks))
            for role, networks in sorted(wanted_sets(record.policy).items())]
    parts = []
    if vm_plan is not None:
        parts.append("# namespace %s\n%s" % (record.netns, firewall_plan.render(vm_plan)))
    parts.append("# host namespace\n%s" % firewall_plan.render(host_plan))
    where = "namespace %s" % record.netns if record.netns else "host namespace"
    if sets:
        parts.append("# sets in the %s\n%s\n" % (where, "\n".join(sets)))
    return "\n".join(parts)


def rules_differ(before, after):
    if before is None or after is None:
        return True
    return (before.policy, before.ports) != (after.policy, after.ports)


def build_diff(before, after):
    """Ansible diffs of the VmRecords BEFORE and AFTER (None where there is
    none): the facts, and the rules when they differ."""
    name = (after or before).id if (after or before) is not None else "?"
    diffs = [{"before_header": "%s (facts)" % name, "after_header": "%s (facts)" % name,
              "before": facts_text(before), "after": facts_text(after)}]
    if rules_differ(before, after):
        diffs.append({"before_header": "%s (rules)" % name, "after_header": "%s (rules)" % name,
                      "before": rules_text(before), "after": rules_text(after)})
    return diffs


def exit_with(module, result, **extra):
    """exit_json with the core's result: changed, changes, the VM's facts
    (``vm``), and the diff in diff mode."""
    for warning in result.warnings:
        module.warn(warning)
    out = {"changed": result.changed, "changes": [str(c) for c in result.changes],
           "vm": facts(result.record) if result.record is not None else {}}
    out.update(extra)
    if module._diff and result.record is not None:
        out["diff"] = build_diff(result.before, result.after)
    module.exit_json(**out)
