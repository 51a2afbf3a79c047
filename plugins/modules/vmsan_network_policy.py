#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmsan_network_policy
short_description: Set the outbound policy of a running microVM
description:
  - Replaces the outbound policy of an existing VM (made by M(vmsan.network.vmsan_vm) or C(vmsan create)) in
    one atomic commit per firewall table, without recreating its devices.
  - Addresses the host resolver learned for names the new policy no longer allows are forgotten, and tracked
    connections the new policy forbids are cut; flows that stay allowed are not disturbed.
  - The options describe the whole policy; a list that is left out is empty in the new policy.
  - Idempotent against the kernel; the same core and messages as C(vmsan network).
author:
  - vmsan maintainers (@vmsan)
version_added: 1.0.0
requirements:
  - Linux with network namespaces and the legacy iptables tables (C(iptables-legacy))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vmsan.network.vmsan
  - vmsan.network.vmsan.policy
attributes:
  check_mode:
    support: full
    details: Reports the planned changes (rules, sets, learned addresses to forget, connections to cut) and
      changes nothing.
  diff_mode:
    support: full
    details: Shows the VM's facts and its firewall rules before and after, as C(iptables-save)-like text.
options:
  vm:
    description:
      - The id of an existing VM.
    type: str
    required: true
  network_policy:
    description:
      - One of V(allow-all), V(deny-all) or V(custom).
      - Left out, the policy is V(custom) when a list is given; at least one of this option and the lists must
        be given.
      - V(deny-all) with a list is an error.
    type: str
seealso:
  - module: vmsan.network.vmsan_vm
"""

EXAMPLES = r"""
- name: Lock a VM down while it is investigated
  vmsan.network.vmsan_network_policy:
    vm: build1
    network_policy: deny-all

- name: Let it reach the package mirror again, and one internal network
  vmsan.network.vmsan_network_policy:
    vm: build1
    allowed_domains:
      - deb.debian.org
    allowed_cidrs:
      - 192.0.2.0/24
"""

RETURN = r"""
changes:
  description: What the run changed (or, in check mode, would change), one line per change.
  returned: always
  type: list
  elements: str
  sample:
    - update settings of VM build1
    - "vmsan-build1: filter: set chain vmsan-build1-out (6 rules)"
vm:
  description: The VM's facts after the run (see M(vmsan.network.vmsan_vm) for every key).
  returned: always
  type: dict
  sample:
    id: build1
    network_policy: deny-all
    allowed_domains: []
    allowed_cidrs: []
    denied_cidrs: []
"""

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.errors import InputError
from ansible_collections.vmsan.network.plugins.module_utils.model.records import KEEP

OPTIONS = dict({k: face.VM_OPTIONS[k] for k in face.POLICY_OPTIONS + inputs.VM_LIMITS}, vm=dict(type="str", required=True))


def parse(params):
    limits = inputs.limits(*(params.get(name) for name in inputs.VM_LIMITS))
    if all(params.get(k) is None for k in face.POLICY_OPTIONS) and limits is KEEP:
        raise InputError("network_policy", "nothing to change",
                         "network_policy, allowed_domains, allowed_cidrs, denied_cidrs, audit or a limit_* option")
    policy = KEEP
    if any(params.get(k) is not None for k in face.POLICY_OPTIONS):
        policy = inputs.policy(params["network_policy"], params["allowed_domains"],
                               params["allowed_cidrs"], params["denied_cidrs"], bool(params.get("audit")))
    return dict(vm_id=inputs.vm_id(params["vm"], "vm"), policy=policy, limits=limits)


def act(manager, wanted, check_mode):
    return manager.update(wanted["vm_id"], policy=wanted["policy"], check_mode=check_mode, limits=wanted["limits"])


def main():
    face.module_main("vmsan_network_policy", OPTIONS, parse, act)


if __name__ == "__main__":
    main()
