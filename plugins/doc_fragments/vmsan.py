# -*- coding: utf-8 -*-
# Copyright: vmsan maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """What every vmsan module shares: the state directory option, the
    libraries the core needs, root, and the platform."""

    DOCUMENTATION = r"""
options:
  state_dir:
    description:
      - Directory of the VM state files.
      - Default is E(VMSAN_HOME) if set, else C(/var/lib/vmsan).
    type: path
requirements:
  - pyroute2
  - python-iptables
  - dnslib
  - root privileges
attributes:
  platform:
    platforms: posix
"""

    # The policy's lists, audit mode and the budgets: the options vmsan_vm and
    # vmsan_network_policy share (vmsan_vms has them as suboptions of config,
    # which a fragment cannot reach).
    POLICY = r"""
options:
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
  limit_connections:
    description:
      - Connections the guest may have tracked at once; beyond it a new TCP connection is reset and anything
        else new is dropped. A whole number from 64 to 1048576, or V(default) (16384).
      - Left out, an existing VM keeps its budget.
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
"""
