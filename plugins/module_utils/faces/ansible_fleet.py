# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The main of the fleet module ``vmsan_vms``: a host's VM list in one
module run (one process, the core imported once), in the network resource
module convention of ansible.netcommon (docs/ansible.md, "vmsan_vms").

The module's options are parsed into ``plan.fleet.Wanted`` values (bad
input fails naming ``config[N].option`` before anything changes),
``plan.fleet.plan`` decides the steps, and each step is one call of
``lifecycle.manager.Manager`` (ensure or remove, each under the state lock,
as the single-VM modules make it). What is returned: ``before`` and
``after`` (every VM of the host in the shape of ``config``), ``gathered``,
the changes and facts per VM, one diff per VM.
"""

from __future__ import absolute_import, division, print_function

import traceback

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError
from ansible_collections.vmsan.network.plugins.module_utils.model.facts import facts
from ansible_collections.vmsan.network.plugins.module_utils.model.records import BrokenRecord, VmRecord
from ansible_collections.vmsan.network.plugins.module_utils.plan import fleet

__metaclass__ = type

ITEM_OPTIONS = dict(face.VM_OPTIONS, name=dict(type="str", required=True))
OPTIONS = dict(
    config=dict(type="list", elements="dict", options=ITEM_OPTIONS),
    state=dict(type="str", choices=list(fleet.STATES), default=fleet.MERGED),
)


# --------------------------------------------------------------------------
# options -> plan.fleet.Wanted
# --------------------------------------------------------------------------
class ItemError(InputError):
    """Bad input in one item of config: the message names config[N], the
    option and the VM."""

    def __init__(self, index, name, error):
        option = inputs.label(error.param, "ansible")
        self.where = "config[%d].%s" % (index, option) if not option.startswith("config") else option
        InputError.__init__(self, self.where, error.detail, error.accepted)
        self.vm = name

    def message(self):
        shown = "%s (VM %s)" % (self.where, self.vm) if isinstance(self.vm, str) and self.vm else self.where
        return self.render(shown)


def parse_item(index, params):
    """One item of config as a Wanted."""
    try:
        settings = face.vm_settings(params)
        return fleet.Wanted(index=index, id=inputs.vm_id(params["name"]), **settings)
    except InputError as exc:
        raise ItemError(index, params.get("name"), exc)


def parse(params):
    """The task's config as Wanted values (None when it was left out)."""
    if params["config"] is None:
        return None
    return [parse_item(index, item) for index, item in enumerate(params["config"])]


# --------------------------------------------------------------------------
# rendering: a VM in the shape of config
# --------------------------------------------------------------------------
RATE_UNITS = (("gbit", 1000 ** 3), ("mbit", 1000 ** 2), ("kbit", 1000))


def rate_text(bits):
    """A rate in bit/s as the options take it (50000000 -> 50mbit)."""
    for unit, size in RATE_UNITS:
        if bits % size == 0:
            return "%d%s" % (bits // size, unit)
    return "%skbit" % repr(bits / 1000.0)


def vm_config(record):
    """RECORD as an item of config (the options vmsan_vms takes, with the
    values the VM has; empty lists and unset options left out, as netcommon's
    facts leave them out), so that ``gathered`` can be given back as
    ``config``."""
    policy = record.policy
    item = {"name": record.id, "netns": record.netns is not None, "slot": record.slot,
            "network_policy": policy.mode}
    for key, values in (("allowed_domains", policy.allowed_domains), ("allowed_cidrs", policy.allowed_cidrs),
                        ("denied_cidrs", policy.denied_cidrs), ("published_ports", [p.text for p in record.ports])):
        if values:
            item[key] = list(values)
    for key, bits in (("bandwidth", record.bandwidth.send), ("bandwidth_in", record.bandwidth.receive)):
        if bits:
            item[key] = rate_text(bits)
    if record.tap_owner is not None:
        item["tap_owner"] = str(record.tap_owner)
    for key, value in limit_options(record.limits):
        item[key] = str(value)
    return item


def limit_options(limits):
    """The budgets of LIMITS set apart from the defaults, as (limit_* option, number)."""
    given = (("limit_connections", limits.connections),
             ("limit_dns_queries_per_second", limits.dns.queries_per_second),
             ("limit_dns_upstream_queries", limits.dns.upstream_queries),
             ("limit_dns_tcp_connections", limits.dns.tcp_connections))
    return [(key, value) for key, value in given if value is not None]


def configs(records):
    """The VmRecords among RECORDS (a dict by id) as config, by name."""
    return [vm_config(records[vm_id]) for vm_id in sorted(records) if isinstance(records[vm_id], VmRecord)]


def vm_diff(before, after):
    """One Ansible diff for one VM (VmRecords, None where there is none): its
    facts and, when the policy or the ports differ, its rules."""
    vm_id = (after or before).id
    texts = [face.facts_text(before), face.facts_text(after)]
    if face.rules_differ(before, after):
        texts = [t + ("\n" + face.rules_text(r) if r is not None else "") for t, r in zip(texts, (before, after))]
    return {"before_header": "VM %s" % vm_id, "after_header": "VM %s" % vm_id, "before": texts[0], "after": texts[1]}


# --------------------------------------------------------------------------
# running the steps
# --------------------------------------------------------------------------
class StepFailed(Exception):
    def __init__(self, vm_id, error, done):
        Exception.__init__(self, str(error))
        self.vm_id, self.error, self.done = vm_id, error, done


def run_step(manager, step, check_mode):
    """The core's Result of one step of plan.fleet."""
    if isinstance(step, fleet.Remove):
        return manager.remove(step.id, check_mode=check_mode, missing_ok=True)
    ports = step.ports
    if step.merge_ports:
        ports = step.ports_of       # called under the state lock, on the ports the VM has then
    return manager.ensure(step.id, use_netns=step.use_netns,
                          slot=step.predicted_slot if check_mode and step.new else step.slot,
                          policy=step.policy, ports=ports, bandwidth=step.bandwidth,
                          bandwidth_in=step.bandwidth_in, tap_owner=step.tap_owner, limits=step.limits,
                          check_mode=check_mode,
                          # in check mode, the VMs before it in the run saved nothing: their ports
                          # as they will be were checked by the plan
                          others_checked=check_mode)


def run_steps(manager, steps, check_mode):
    """[(step, Result)] of STEPS, run in order; StepFailed (with the ones
    done) at the first that fails: the VMs after it are left as they are."""
    done = []
    for step in steps:
        try:
            done.append((step, run_step(manager, step, check_mode)))
        except Exception as exc:  # pylint: disable=broad-exception-caught  # reported with what was done
            raise StepFailed(step.id, exc, done)
    return done


def summary(have, done, listed=None):
    """The return values of the steps DONE on a host that had HAVE ({id:
    record}): the VMs after them, the changes by VM, and the facts of the
    VMs of LISTED (ids; None: every VM) that exist after them."""
    after = dict(have)
    changes = {}
    for step, result in done:
        if isinstance(step, fleet.Remove):
            after.pop(step.id, None)
        elif result.after is not None:
            after[step.id] = result.after
        if result.changes:
            changes[step.id] = [str(c) for c in result.changes]
    vms = {vm_id: facts(r) for vm_id, r in sorted(after.items())
           if isinstance(r, VmRecord) and (listed is None or vm_id in listed)}
    return {"before": configs(have), "after": configs(after), "changes": changes, "vms": vms}


# --------------------------------------------------------------------------
# the module
# --------------------------------------------------------------------------
def _fail(module, exc, **extra):
    if isinstance(exc, ItemError):
        module.fail_json(msg=exc.message(), param=exc.where, **extra)
    if isinstance(exc, InputError):
        module.fail_json(msg=face.error_message(exc), param=inputs.label(exc.param, "ansible"), **extra)
    module.fail_json(msg=face.error_message(exc), exception=traceback.format_exc(), **extra)


def main():
    """The body of vmsan_vms."""
    module, manager_class = face.prepared_module("vmsan_vms", OPTIONS)
    state = module.params["state"]
    try:
        wanted = parse(module.params)
        manager = manager_class(module.params["state_dir"])
        have = {record.id: record for record in manager.list()}
        for record in have.values():
            if isinstance(record, BrokenRecord):
                module.warn("VM %s cannot be read (%s): it is left as it is" % (record.id, record.error))
        if state == fleet.GATHERED:
            module.exit_json(changed=False, gathered=configs(have), vms=summary(have, [])["vms"])
        steps = fleet.plan(state, wanted, have, manager.store.used_slots())
    except Exception as exc:  # pylint: disable=broad-exception-caught  # every error becomes fail_json
        _fail(module, exc)
    listed = None if wanted is None else {item.id for item in wanted}
    try:
        done = run_steps(manager, steps, module.check_mode)
    except StepFailed as failed:
        out = summary(have, failed.done, listed)
        failed_exc = failed.error
        module.fail_json(msg="VM %s: %s" % (failed.vm_id, face.error_message(failed_exc)), vm=failed.vm_id,
                         changed=bool(out["changes"]), **out)
    out = summary(have, done, listed)
    for _step, result in done:
        for warning in result.warnings:
            module.warn(warning)
    if module._diff:
        out["diff"] = [vm_diff(result.before, result.after if not isinstance(step, fleet.Remove) else None)
                       for step, result in done if result.changes]
    module.exit_json(changed=bool(out["changes"]), **out)
