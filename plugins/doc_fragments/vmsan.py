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
