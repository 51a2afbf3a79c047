#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmsan_port
short_description: Publish one port of a microVM on the host, or stop publishing it
description:
  - Adds or removes one published port of an existing VM without touching its other ports, like
    C(vmsan port add|remove).
  - A published port is reachable through the host's addresses from other machines and from the host itself,
    under every outbound policy.
  - A port that another VM publishes, or that a process on the host already listens on, is refused before
    anything changes.
  - With O(state=present), a port of the VM on the same protocol, host port and an overlapping host address
    is replaced (for example to change its guest port).
  - Idempotent against the kernel, so a removed DNAT rule is put back by the next run.
author:
  - vmsan maintainers (@vmsan)
version_added: 1.0.0
requirements:
  - Linux with network namespaces and the legacy iptables tables (C(iptables-legacy))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vmsan.network.vmsan
attributes:
  check_mode:
    support: full
    details: Reports the planned changes and changes nothing.
  diff_mode:
    support: full
    details: Shows the VM's facts and its firewall rules before and after.
options:
  vm:
    description:
      - The id of an existing VM.
    type: str
    required: true
  host_port:
    description:
      - The port on the host (1-65535).
    type: int
    required: true
  guest_port:
    description:
      - The port in the guest (1-65535). Default is O(host_port).
      - Ignored with O(state=absent).
    type: int
  protocol:
    description:
      - The transport protocol.
    type: str
    choices: [tcp, udp]
    default: tcp
  host_ip:
    description:
      - The host address the port is published on; V(0.0.0.0) means every address of the host.
    type: str
    default: 0.0.0.0
  state:
    description:
      - Whether the port is published.
    type: str
    choices: [present, absent]
    default: present
seealso:
  - module: vmsan.network.vmsan_vm
"""

EXAMPLES = r"""
- name: Forward host port 8080 to the guest's web server on port 80
  vmsan.network.vmsan_port:
    vm: web1
    host_port: 8080
    guest_port: 80

- name: A DNS server in the guest, only on the host's loopback
  vmsan.network.vmsan_port:
    vm: web1
    host_ip: 127.0.0.1
    host_port: 5353
    guest_port: 53
    protocol: udp

- name: Stop publishing 8080
  vmsan.network.vmsan_port:
    vm: web1
    host_port: 8080
    state: absent
"""

RETURN = r"""
changes:
  description: What the run changed (or, in check mode, would change), one line per change.
  returned: always
  type: list
  elements: str
  sample:
    - update settings of VM web1
    - "nat: set chain vmsan-web1-pub (1 rules)"
published_ports:
  description: The VM's published ports after the run, in the form C([host_ip:]host_port:guest_port/protocol).
  returned: always
  type: list
  elements: str
  sample: ["8080:80/tcp", "127.0.0.1:5353:53/udp"]
vm:
  description: The VM's facts after the run (see M(vmsan.network.vmsan_vm) for every key).
  returned: always
  type: dict
  sample:
    id: web1
    published_ports: ["8080:80/tcp"]
"""

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.plan.ports import with_added, without

OPTIONS = dict(
    vm=dict(type="str", required=True),
    host_port=dict(type="int", required=True),
    guest_port=dict(type="int"),
    protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
    host_ip=dict(type="str", default="0.0.0.0"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
)


def parse(params):
    """The task's port as a PortSpec; each part is checked under its own name."""
    return dict(vm_id=inputs.vm_id(params["vm"], "vm"),
                spec=inputs.port(params["host_port"], params["guest_port"], params["protocol"], params["host_ip"]),
                present=params["state"] == "present")


def publish(manager, vm_id, spec, present, check_mode):
    """Publish SPEC (replacing a port of the VM on the same host side) or
    stop publishing it, the VM's other ports untouched. The edit is made
    under the state lock, on the ports as they are then."""
    def edit(current):
        if present:
            return with_added(vm_id, current, [spec], replace=True)
        return without(vm_id, current, [(spec, False, spec.text)], missing_ok=True)
    return manager.update(vm_id, ports=edit, check_mode=check_mode)


def act(manager, wanted, check_mode):
    return publish(manager, wanted["vm_id"], wanted["spec"], wanted["present"], check_mode)


def returned(result):
    return {"published_ports": [p.text for p in result.record.ports] if result.record is not None else []}


def main():
    face.module_main("vmsan_port", OPTIONS, parse, act, returned)


if __name__ == "__main__":
    main()
