# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the three vmsan modules share: the checks before the core runs
(libraries, root), the mapping of core errors to ``fail_json`` in Ansible's
vocabulary, and the rendering of a core result (facts, changes, diff).

The modules parse their arguments, call the core (``vm.Manager``) and hand the
result here; no decision about the kernel is made in this file.
"""

from __future__ import absolute_import, division, print_function

import importlib
import json
import os
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError, VmsanError

__metaclass__ = type

# (import name, distribution name, where to get it)
REQUIRED_LIBRARIES = (
    ("pyroute2", "pyroute2", "https://pypi.org/project/pyroute2/"),
    ("iptc", "python-iptables", "https://pypi.org/project/python-iptables/"),
    ("dnslib", "dnslib", "https://pypi.org/project/dnslib/"),
)

# Facts that describe the VM's firewall: a diff shows the rules when one of
# them differs.
_RULE_FACTS = ("network_policy", "allowed_domains", "allowed_cidrs", "denied_cidrs", "published_ports")

# The options that every module shares, for argument_spec.
STATE_DIR_OPTION = {"type": "path"}


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
    if isinstance(exc, InputError):
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


# --------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------
def _facts_text(facts):
    if not facts:
        return ""
    return json.dumps(facts, indent=2, sort_keys=True) + "\n"


def record_from_facts(facts):
    """The part of a VM record that the firewall plan reads, from its facts."""
    return {
        "id": facts["id"],
        "slot": facts["slot"],
        "netns": facts["netns"],
        "policy": {"mode": facts["network_policy"],
                   "allowed_domains": list(facts["allowed_domains"]),
                   "allowed_cidrs": list(facts["allowed_cidrs"]),
                   "denied_cidrs": list(facts["denied_cidrs"])},
        "published_ports": list(facts["published_ports"]),
    }


def rules_text(facts):
    """iptables-save-like text of the rules the core plans for a VM (empty
    for no VM): its own namespace's rules, then the host namespace's."""
    if not facts:
        return ""
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import converge as vm
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle import policy as policy_apply
    from ansible_collections.vmsan.network.plugins.module_utils.plan import firewall as firewall_plan
    record = record_from_facts(facts)
    vm_plan, host_plan = vm.firewall_plans(record)
    # The CIDR lists live in ipsets that the rules match: show their contents.
    sets = ["# ipset %s: %s" % (firewall_plan.set_name(facts["id"], role),
                                "learned by the resolver" if networks is None else " ".join(networks))
            for role, networks in sorted(policy_apply.wanted_sets(inputs.policy_from_dict(record["policy"])).items())]
    parts = []
    if vm_plan is not None:
        parts.append("# namespace %s\n%s" % (facts["netns"], firewall_plan.render(vm_plan)))
    parts.append("# host namespace\n%s" % firewall_plan.render(host_plan))
    where = "namespace %s" % facts["netns"] if facts["netns"] else "host namespace"
    if sets:
        parts.append("# sets in the %s\n%s\n" % (where, "\n".join(sets)))
    return "\n".join(parts)


def build_diff(before, after):
    """Ansible diffs (a list: the facts, and the rules when they differ)."""
    name = (after or before or {}).get("id", "?")
    diffs = [{"before_header": "%s (facts)" % name, "after_header": "%s (facts)" % name,
              "before": _facts_text(before), "after": _facts_text(after)}]
    if any((before or {}).get(k) != (after or {}).get(k) for k in _RULE_FACTS):
        diffs.append({"before_header": "%s (rules)" % name, "after_header": "%s (rules)" % name,
                      "before": rules_text(before), "after": rules_text(after)})
    return diffs


def exit_with(module, result, **extra):
    """exit_json with the core's result: changed, changes, the VM's facts
    (``vm``), and the diff in diff mode."""
    for warning in result.warnings:
        module.warn(warning)
    out = {"changed": result.changed, "changes": list(result.changes), "vm": result.vm or {}}
    out.update(extra)
    if module._diff and result.diff is not None:
        out["diff"] = build_diff(result.diff.get("before"), result.diff.get("after"))
    module.exit_json(**out)


# --------------------------------------------------------------------------
# options left out
# --------------------------------------------------------------------------
KEEP = object()   # an option the task did not give: keep the VM's current value


def settings_for(existing, policy=KEEP, ports=KEEP, bandwidth=KEEP, bandwidth_in=KEEP, tap_owner=KEEP):
    """Keyword arguments for ``Manager.ensure``: what the task gave, and for
    what it left out the existing VM's value (EXISTING: its facts, or None for
    a new VM, which gets the core's defaults)."""
    existing = existing or {}
    if policy is KEEP:
        policy = inputs.policy_from_dict({"mode": existing["network_policy"],
                                          "allowed_domains": existing["allowed_domains"],
                                          "allowed_cidrs": existing["allowed_cidrs"],
                                          "denied_cidrs": existing["denied_cidrs"]}) if existing else None
    if ports is KEEP:
        ports = inputs.port_list("published_ports", existing.get("published_ports", []))
    if bandwidth is KEEP:
        bandwidth = existing.get("bandwidth")
    if bandwidth_in is KEEP:
        bandwidth_in = existing.get("bandwidth_in")
    if tap_owner is KEEP:
        tap_owner = existing.get("tap_owner")
    return {"policy": policy, "ports": ports, "bandwidth": bandwidth, "bandwidth_in": bandwidth_in,
            "tap_owner": tap_owner}


def given(value, parse):
    """PARSE(value) when the task gave the option, else KEEP."""
    return KEEP if value is None else parse(value)


# --------------------------------------------------------------------------
# one published port among the VM's others
# --------------------------------------------------------------------------
def ports_with(current, spec):
    """CURRENT (PortSpecs) with SPEC published: a port of the VM that SPEC
    collides with (same protocol and host port, overlapping host address) is
    replaced in place, so the order of the others does not change."""
    out, placed = [], False
    for port in current:
        if inputs.ports_collide(port, spec):
            if not placed:
                out.append(spec)
                placed = True
            continue
        out.append(port)
    return out if placed else out + [spec]


def ports_without(current, spec):
    """CURRENT without the port published on SPEC's host address, host port and
    protocol (its guest port does not matter)."""
    return [p for p in current
            if (p.host_ip, p.host_port, p.protocol) != (spec.host_ip, spec.host_port, spec.protocol)]
