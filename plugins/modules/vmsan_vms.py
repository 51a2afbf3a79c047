#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vmsan_vms
short_description: Converge the networks of a host's microVMs from one list
description:
  - Manages the microVM networks of a host as one resource, in the convention of the network resource modules of
    C(ansible.netcommon) (O(state=merged), V(replaced), V(overridden), V(deleted), V(gathered)).
  - Each item of O(config) takes the options of M(vmsan.network.vmsan_vm), and every listed VM is created or
    converged in one module run (one process, the vmsan core imported once), which costs milliseconds per VM
    where a loop over M(vmsan.network.vmsan_vm) costs a module run per VM.
  - Each VM is compared with the kernel (links, addresses, routes, sysctls, iptables, ipsets), not only with its
    state file, so a second run reports no change and drift is repaired, as with M(vmsan.network.vmsan_vm).
  - The whole list is checked before any VM changes (the options of each item, names listed twice, a slot
    asked for twice or held by another VM, a host port that two VMs would publish, a VM that would have to move
    to another slot or namespace); such a list fails and nothing changes.
  - VMs run one after another, each under the state lock; the VMs that give up a published port run first, so
    that a port can move from one listed VM to another in one run. If one VM fails, the run stops there and
    returns what it changed until then.
author:
  - vmsan maintainers (@vmsan)
version_added: 2.0.0
requirements:
  - Linux with network namespaces, C(/dev/net/tun) and the legacy iptables tables (C(iptables-legacy))
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - vmsan.network.vmsan
attributes:
  check_mode:
    support: full
    details:
      - Reports the same changes as a real run (RV(changes)) and the VMs the run would leave (RV(after)), new VMs
        in the slots the real run gives them; changes nothing.
  diff_mode:
    support: full
    details:
      - One diff per VM that changes, headed with its name - its facts before and after and, when its policy or
        published ports change, its firewall rules before and after as C(iptables-save)-like text.
options:
  config:
    description:
      - The VMs, each with the options of M(vmsan.network.vmsan_vm) but O(vmsan.network.vmsan_vm#module:state) and
        O(vmsan.network.vmsan_vm#module:published_ports_exclusive).
      - What each state does with an option that an item leaves out is described under O(state).
      - Required with O(state=merged), V(replaced) and V(overridden); only O(config[].name) is read with
        O(state=deleted); ignored with O(state=gathered).
    type: list
    elements: dict
    suboptions:
      name:
        description:
          - The VM id (1-16 characters of C(A-Z a-z 0-9 _ -), starting with a letter or digit).
          - Its network namespace is C(vmsan-<name>).
        type: str
        required: true
      netns:
        description:
          - Put the VM's TAP in its own network namespace C(vmsan-<name>); V(false) keeps it in the host namespace
            (weaker isolation, a warning is given).
          - A VM cannot move between the two; remove it first.
          - Left out, a new VM gets its own namespace; with O(state=merged) an existing VM keeps its own.
        type: bool
      slot:
        description:
          - The VM's slot, which fixes its addresses (slot C(s) below 255 gets C(172.16.s.0/30)).
          - Default is the lowest free slot. An existing VM cannot change its slot.
        type: int
      network_policy:
        description:
          - The outbound policy, one of V(allow-all), V(deny-all) or V(custom); it becomes V(custom) when one of the
            lists is given. V(deny-all) with a list is an error.
          - This option and the three lists describe the policy together; giving any of them sets the whole policy.
        type: str
      allowed_domains:
        description:
          - Names the guest may resolve and then reach (V(api.example.com) exact, V(*.example.com) any subdomain).
        type: list
        elements: str
      allowed_cidrs:
        description:
          - IPv4 networks the guest may reach (V(10.0.0.0/8), or a bare address for a /32).
        type: list
        elements: str
      denied_cidrs:
        description:
          - IPv4 networks the guest may never reach, whatever else allows them.
        type: list
        elements: str
      audit:
        description:
          - Audit mode, with a V(custom) policy only. The VM keeps the isolation baseline and anti-spoofing, but
            what the lists would refuse passes and is logged as C(would refuse) in the event log; C(vmsan policy
            suggest) then prints the smallest lists that would have allowed it.
          - Part of the policy. Left out while other policy options are given, it is V(false).
        type: bool
      published_ports:
        description:
          - Ports published to the host, each in the form C([host_ip:]host_port[:guest_port][/tcp|udp]), for
            example V(8080) or V(127.0.0.1:8080:80/tcp).
          - With O(state=merged) these ports are added to the VM's others (one on the same protocol, host port and
            an overlapping host address is replaced), as M(vmsan.network.vmsan_vm) does; with O(state=replaced)
            and V(overridden) they are the VM's whole list.
        type: list
        elements: str
      bandwidth:
        description:
          - Cap on what the guest sends, for example V(50mbit) (units kbit, mbit, gbit); V(none) for no cap.
        type: str
      bandwidth_in:
        description:
          - Cap on what the guest receives, for example V(50mbit); V(none) for no cap.
        type: str
      tap_owner:
        description:
          - A uid or user name that may open the TAP (a jailed, unprivileged VMM).
        type: str
      limit_connections:
        description:
          - Connections the guest may have tracked at once; beyond it a new TCP connection is reset and anything
            else new is dropped. A whole number from 64 to 1048576, or V(default) (16384).
        type: str
      limit_dns_queries_per_second:
        description:
          - DNS queries per second the host resolver answers for this guest; beyond it the answer is REFUSED.
            1 to 1000000, or V(default) (the resolver's C(--vm-queries-per-second)).
        type: str
      limit_dns_upstream_queries:
        description:
          - The guest's DNS queries in flight to the upstream at once. 1 to 4096, or V(default).
        type: str
      limit_dns_tcp_connections:
        description:
          - The guest's DNS connections over TCP at once. 1 to 1024, or V(default).
        type: str
  state:
    description:
      - V(merged) creates the listed VMs that do not exist and sets the options each item gives; what it leaves
        out keeps the VM's value (for a new VM, the default). Ports are added (see O(config[].published_ports)).
        Other VMs of the host are left alone.
      - V(replaced) creates or converges each listed VM to exactly the options its item gives, the others taking
        their defaults (V(allow-all), no lists, no published ports, no caps, root-only TAP, default budgets). Other VMs of the
        host are left alone.
      - V(overridden) does what V(replaced) does and first removes every VM of the host that is not listed, which
        frees their slots and ports for the list. An empty O(config) is refused (it would remove every VM); use
        V(deleted) without O(config) for that.
      - V(deleted) removes the listed VMs (those that do not exist are no change). Without O(config) it removes
        every VM of the host, as netcommon's resource modules do; an empty O(config) removes nothing.
      - V(gathered) returns the host's VMs in RV(gathered), in the shape of O(config), and changes nothing.
    type: str
    choices: [merged, replaced, overridden, deleted, gathered]
    default: merged
notes:
  - A VM's DNS goes to the host resolver (C(vmsan resolver), installed by the C(vmsan.network.vmsan_host) role);
    domain allowlists need it running.
  - The C(vmsan.network.vmsan_vms) role runs this module with O(state=replaced), or V(overridden) when it prunes.
  - Unlike C(ansible.netcommon)'s merge, which unites lists, O(state=merged) sets a given policy list as it is
    (a policy is one value; uniting allowlists would open it to entries the task does not name).
seealso:
  - module: vmsan.network.vmsan_vm
  - module: vmsan.network.vmsan_port
  - module: vmsan.network.vmsan_network_policy
  - name: Network resource module states
    description: The states of ansible.netcommon's resource modules, which this module follows.
    link: https://docs.ansible.com/ansible/latest/network/user_guide/network_resource_modules.html
"""

EXAMPLES = r"""
# Using merged: create two VMs, or set the options given on them

- name: A CI runner and its cache
  vmsan.network.vmsan_vms:
    config:
      - name: ci-runner
        allowed_domains:
          - deb.debian.org
          - "*.github.com"
        denied_cidrs:
          - 10.0.0.0/8
      - name: ci-cache
        network_policy: deny-all
        published_ports:
          - "127.0.0.1:8081:80"
    state: merged
  register: fleet

- name: Boot each guest with the addresses vmsan chose
  ansible.builtin.debug:
    msg: "{{ item.key }}: tap {{ item.value.tap }}, boot args {{ item.value.boot_args }}"
  loop: "{{ fleet.vms | dict2items }}"

# Using replaced: each listed VM gets exactly these options (web1 loses any
# other port, its cap and its lists); the host's other VMs stay

- name: Describe web1 completely
  vmsan.network.vmsan_vms:
    config:
      - name: web1
        allowed_cidrs:
          - 192.0.2.0/24
        published_ports:
          - "80:8080"
          - "443:8443"
    state: replaced

# Using overridden: the host has exactly these VMs

- name: Converge the host's whole list, removing the VMs it does not name
  vmsan.network.vmsan_vms:
    config: "{{ host_vms }}"
    state: overridden

# Using deleted

- name: Remove two VMs
  vmsan.network.vmsan_vms:
    config:
      - name: old1
      - name: old2
    state: deleted

- name: Remove every VM of the host
  vmsan.network.vmsan_vms:
    state: deleted

# Using gathered

- name: Read the host's VMs as a list that state=replaced takes back
  vmsan.network.vmsan_vms:
    state: gathered
  register: current

- name: Show them
  ansible.builtin.debug:
    var: current.gathered
"""

RETURN = r"""
before:
  description:
    - Every VM of the host before the run, in the shape of O(config), sorted by name. Options with no value
      (empty lists, no cap, root-only TAP) are left out.
  returned: when O(state) is not V(gathered)
  type: list
  elements: dict
  sample:
    - name: web1
      netns: true
      slot: 0
      network_policy: custom
      allowed_cidrs: ["192.0.2.0/24"]
      published_ports: ["80:8080/tcp"]
after:
  description:
    - Every VM of the host after the run (in check mode, as the run would leave them), in the shape of O(config).
  returned: when O(state) is not V(gathered)
  type: list
  elements: dict
  sample:
    - name: web1
      netns: true
      slot: 0
      network_policy: custom
      allowed_cidrs: ["192.0.2.0/24"]
      published_ports: ["80:8080/tcp", "443:8443/tcp"]
gathered:
  description: Every VM of the host, in the shape of O(config), sorted by name.
  returned: when O(state=gathered)
  type: list
  elements: dict
  sample:
    - name: ci-cache
      netns: true
      slot: 1
      network_policy: deny-all
      published_ports: ["127.0.0.1:8081:80/tcp"]
      bandwidth: 50mbit
changes:
  description:
    - What the run changed (or, in check mode, would change), by VM name, one line per change; VMs with no
      change are left out.
  returned: when O(state) is not V(gathered)
  type: dict
  sample:
    web1:
      - update settings of VM web1
      - "nat: set chain vmsan-web1-pub (2 rules)"
vms:
  description:
    - The facts of the listed VMs that exist after the run (in check mode, as the run would leave them), by name;
      with O(state=gathered), and with O(state=deleted) without O(config), of every VM of the host.
    - Each is what M(vmsan.network.vmsan_vm) returns as RV(vmsan.network.vmsan_vm#module:vm) (tap, addresses,
      boot arguments, the Firecracker entry, the settings).
  returned: success
  type: dict
  sample:
    web1:
      id: web1
      slot: 0
      tap: fhvm0
      netns: vmsan-web1
      guest_ip: 172.16.0.2
      boot_args: "ip=172.16.0.2::172.16.0.1:255.255.255.252::eth0:off:172.16.0.1"
vm:
  description: The VM whose step failed.
  returned: failure, when a VM failed after the list was checked
  type: str
  sample: web1
"""

from ansible_collections.vmsan.network.plugins.module_utils.faces.ansible_fleet import main


if __name__ == "__main__":
    main()
