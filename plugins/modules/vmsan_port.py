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
  - pyroute2
  - python-iptables
  - dnslib
  - root privileges
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reports the planned changes and changes nothing.
  diff_mode:
    support: full
    details: Shows the VM's facts and its firewall rules before and after.
  platform:
    platforms: posix
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
  state_dir:
    description:
      - Directory of the VM state files.
      - Default is E(VMSAN_HOME) if set, else C(/var/lib/vmsan).
    type: path
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

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs

try:  # the core imports pyroute2 and python-iptables: check_libraries names what is missing
    from ansible_collections.vmsan.network.plugins.module_utils.lifecycle.manager import Manager
    CORE_IMPORT_ERROR = None
except Exception:  # pylint: disable=broad-exception-caught  # reported by check_libraries
    Manager = None
    CORE_IMPORT_ERROR = traceback.format_exc()


def argument_spec():
    return dict(
        vm=dict(type="str", required=True),
        host_port=dict(type="int", required=True),
        guest_port=dict(type="int"),
        protocol=dict(type="str", choices=["tcp", "udp"], default="tcp"),
        host_ip=dict(type="str", default="0.0.0.0"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        state_dir=dict(type="path"),
    )


def parse(params):
    """The task's port as a PortSpec; each number is checked under its own name."""
    vm_id = inputs.vm_id(params["vm"], "vm")
    host_port = inputs.port_number("host_port", params["host_port"])
    guest_port = host_port
    if params["guest_port"] is not None:
        guest_port = inputs.port_number("guest_port", params["guest_port"])
    text = "%s:%d:%d/%s" % (params["host_ip"], host_port, guest_port, params["protocol"])
    return vm_id, inputs.port_spec("host_ip", text)


def publish(manager, vm_id, spec, present, check_mode):
    current = list(inputs.port_list("published_ports", manager.get(vm_id)["published_ports"]))
    wanted = face.ports_with(current, spec) if present else face.ports_without(current, spec)
    return manager.update(vm_id, ports=wanted, check_mode=check_mode)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    face.check_root(module, "vmsan_port")
    face.check_libraries(module, CORE_IMPORT_ERROR)
    params = module.params
    vm_id, spec = face.run(module, lambda: parse(params))
    manager = Manager(params["state_dir"])
    result = face.run(module, lambda: publish(manager, vm_id, spec, params["state"] == "present",
                                              module.check_mode))
    face.exit_with(module, result, published_ports=list((result.vm or {}).get("published_ports", [])))


if __name__ == "__main__":
    main()
