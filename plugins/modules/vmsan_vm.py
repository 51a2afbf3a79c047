#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmsan_vm
short_description: Create, converge or remove the network of one microVM
description:
  - Gives a microVM (Firecracker style) a TAP device with its own /30, by default inside its own network
    namespace, and makes the host enforce the VM's outbound policy (V(allow-all), V(deny-all) or V(custom)),
    published ports and bandwidth caps.
  - Compares the desired state with the kernel (links, addresses, routes, sysctls, iptables, ipsets), not only
    with the state file, and changes only what differs; a second run reports no change, and drift (flushed
    rules, a reboot) is repaired.
  - Options that the task leaves out keep the VM's current value (for a new VM, the defaults below), and
    O(published_ports) adds ports without removing the others, so this module and
    M(vmsan.network.vmsan_network_policy) or M(vmsan.network.vmsan_port) do not undo each other.
  - To describe many VMs completely, use M(vmsan.network.vmsan_vms) (one task for a host's whole list).
  - Runs the same core as the C(vmsan create) command, with the same checks and the same messages (in the
    Ansible option names).
author:
  - vmsan maintainers (@vmsan)
version_added: 1.0.0
requirements:
  - Linux with network namespaces, C(/dev/net/tun) and the legacy iptables tables (C(iptables-legacy))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vmsan.network.vmsan
  - vmsan.network.vmsan.policy
attributes:
  check_mode:
    support: full
    details: Reports the same plan as a real run (the list in RV(changes)) and changes nothing.
  diff_mode:
    support: full
    details: Shows the VM's facts before and after and, when the policy or the published ports change, the
      firewall rules before and after as C(iptables-save)-like text.
options:
  name:
    description:
      - The VM id (1-16 characters of C(A-Z a-z 0-9 _ -), starting with a letter or digit).
      - Its network namespace is C(vmsan-<name>).
    type: str
    required: true
  state:
    description:
      - V(present) creates the VM's network or converges it to the options given.
      - V(absent) removes every namespace, link, route, rule, chain, set, qdisc and tracked connection of the
        VM and checks that nothing is left.
    type: str
    choices: [present, absent]
    default: present
  netns:
    description:
      - Put the VM's TAP in its own network namespace C(vmsan-<name>).
      - V(false) keeps the TAP and its rules in the host namespace (weaker isolation, a warning is given).
      - A VM cannot move between the two; remove it first.
    type: bool
    default: true
  slot:
    description:
      - The VM's slot, which fixes its addresses (slot C(s) below 255 gets C(172.16.s.0/30)).
      - Default is the lowest free slot. An existing VM cannot change its slot.
    type: int
  network_policy:
    description:
      - The outbound policy, one of V(allow-all), V(deny-all) or V(custom).
      - Default for a new VM is V(allow-all); it becomes V(custom) when one of the lists is given.
      - V(deny-all) with a list is an error.
      - This option and the three lists describe the policy together; when none of them is given, an existing
        VM keeps its policy.
    type: str
  published_ports:
    description:
      - Ports published to the host, each in the form C([host_ip:]host_port[:guest_port][/tcp|udp]) of
        C(vmsan create --publish-port), for example V(8080) or V(127.0.0.1:8080:80/tcp).
      - These ports are published; a port of the VM on the same protocol, host port and an overlapping host
        address is replaced (to change its guest port). The VM's other ports are left alone, so that
        M(vmsan.network.vmsan_port) tasks on the same VM are kept, unless O(published_ports_exclusive=true).
      - Left out, an existing VM keeps its ports.
    type: list
    elements: str
  published_ports_exclusive:
    description:
      - Whether O(published_ports) is the VM's whole list, like O(ansible.posix.authorized_key#module:exclusive).
      - V(true) removes the VM's ports that are not in O(published_ports); then V([]) removes them all.
      - V(false) only adds; V([]) changes nothing.
      - Without O(published_ports) this option does nothing.
    type: bool
    default: false
    version_added: 2.0.0
  bandwidth:
    description:
      - Cap on what the guest sends, for example V(50mbit) (units kbit, mbit, gbit); V(none) removes the cap.
    type: str
  bandwidth_in:
    description:
      - Cap on what the guest receives, for example V(50mbit); V(none) removes the cap.
    type: str
  tap_owner:
    description:
      - A uid or user name that may open the TAP (a jailed, unprivileged VMM).
    type: str
notes:
  - The VM's DNS goes to the host resolver (C(vmsan resolver), installed by the C(vmsan.network.vmsan_host)
    role); domain allowlists need it running.
seealso:
  - module: vmsan.network.vmsan_vms
  - module: vmsan.network.vmsan_network_policy
  - module: vmsan.network.vmsan_port
"""

EXAMPLES = r"""
- name: A VM that may reach only the package mirror and GitHub
  vmsan.network.vmsan_vm:
    name: build1
    allowed_domains:
      - deb.debian.org
      - "*.github.com"
    denied_cidrs:
      - 10.0.0.0/8
    published_ports:
      - "2222:22"
  register: build1

- name: Boot the guest with the addresses vmsan chose
  ansible.builtin.debug:
    msg: "firecracker ... --boot-args '{{ build1.vm.boot_args }}' tap {{ build1.vm.tap }}"

- name: Exactly these ports, removing any other (also those added by vmsan_port)
  vmsan.network.vmsan_vm:
    name: build1
    published_ports:
      - "2222:22"
    published_ports_exclusive: true

- name: A VM that may send nothing at all
  vmsan.network.vmsan_vm:
    name: sandbox7
    network_policy: deny-all

- name: Remove a VM's network
  vmsan.network.vmsan_vm:
    name: sandbox7
    state: absent
"""

RETURN = r"""
changes:
  description: What the run changed (or, in check mode, would change), one line per change.
  returned: always
  type: list
  elements: str
  sample:
    - create VM build1 in slot 0
    - "create network namespace vmsan-build1"
    - "vmsan-build1: filter: set chain vmsan-build1-out (9 rules)"
vm:
  description:
    - The VM's facts after the run (for V(state=absent), before the removal); empty when there is no such VM.
  returned: always
  type: dict
  contains:
    id:
      description: The VM id.
      type: str
      sample: build1
    slot:
      description: The VM's slot.
      type: int
      sample: 0
    tap:
      description: The TAP device the VMM opens.
      type: str
      sample: fhvm0
    netns:
      description: The network namespace that holds the TAP; null when it is the host's.
      type: str
      sample: vmsan-build1
    host_ip:
      description: The host side of the VM's /30 (gateway and DNS server of the guest).
      type: str
      sample: 172.16.0.1
    guest_ip:
      description: The guest's address.
      type: str
      sample: 172.16.0.2
    subnet:
      description: The VM's /30.
      type: str
      sample: 172.16.0.0/30
    mac:
      description: The guest's MAC address (stable per slot, locally administered).
      type: str
      sample: "06:00:ac:10:00:02"
    boot_args:
      description: The guest kernel's C(ip=) boot argument.
      type: str
      sample: "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1"
    firecracker:
      description: A Firecracker C(network-interfaces) entry for the TAP.
      type: dict
      sample: {"iface_id": "eth0", "guest_mac": "06:00:ac:10:00:02", "host_dev_name": "fhvm0"}
    network_policy:
      description: The effective policy.
      type: str
      sample: custom
    allowed_domains:
      description: The domain allowlist.
      type: list
      elements: str
      sample: ["deb.debian.org", "*.github.com"]
    allowed_cidrs:
      description: The allowed networks.
      type: list
      elements: str
      sample: []
    denied_cidrs:
      description: The denied networks.
      type: list
      elements: str
      sample: ["10.0.0.0/8"]
    audit:
      description: Whether the policy is in audit mode (what its lists refuse passes, logged).
      type: bool
      sample: false
    published_ports:
      description: The published ports in the normal form C([host_ip:]host_port:guest_port/protocol).
      type: list
      elements: str
      sample: ["2222:22/tcp"]
    bandwidth:
      description: The cap on what the guest sends, in bit/s; null for none.
      type: int
      sample: 50000000
    bandwidth_in:
      description: The cap on what the guest receives, in bit/s; null for none.
      type: int
      sample: null
    tap_owner:
      description: The uid that may open the TAP; null for root only.
      type: int
      sample: null
"""

from ansible_collections.vmsan.network.plugins.module_utils.faces import ansible_module as face
from ansible_collections.vmsan.network.plugins.module_utils.model import inputs
from ansible_collections.vmsan.network.plugins.module_utils.model.records import KEEP
from ansible_collections.vmsan.network.plugins.module_utils.plan.ports import with_added

OPTIONS = dict(
    face.VM_OPTIONS,
    name=dict(type="str", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    netns=dict(type="bool", default=True),
    published_ports_exclusive=dict(type="bool", default=False),
)


def parse(params):
    """The task's options as model values (KEEP for what it left out)."""
    return dict(face.vm_settings(params), vm_id=inputs.vm_id(params["name"]), state=params["state"],
                exclusive=params["published_ports_exclusive"])


def ports_option(vm_id, ports, exclusive):
    """What Manager.ensure gets for PORTS: the list itself when it is the
    VM's whole list, else a function that adds it to the VM's ports as they
    are under the state lock (a colliding one replaced, the others kept)."""
    if ports is KEEP or exclusive:
        return ports
    return lambda current: with_added(vm_id, current, ports, replace=True)


def ensure(manager, wanted, use_netns, check_mode):
    """Create or converge the VM; what the task left out keeps the VM's value
    as it is under the state lock (a concurrent change is not undone)."""
    return manager.ensure(wanted["vm_id"], use_netns=use_netns, slot=wanted["slot"], policy=wanted["policy"],
                          ports=ports_option(wanted["vm_id"], wanted["ports"], wanted["exclusive"]),
                          bandwidth=wanted["bandwidth"], bandwidth_in=wanted["bandwidth_in"],
                          tap_owner=wanted["tap_owner"], check_mode=check_mode, limits=wanted["limits"])


def act(manager, wanted, check_mode):
    if wanted["state"] == "absent":
        return manager.remove(wanted["vm_id"], check_mode=check_mode, missing_ok=True)
    return ensure(manager, wanted, wanted["netns"], check_mode)


def main():
    face.module_main("vmsan_vm", OPTIONS, parse, act)


if __name__ == "__main__":
    main()
