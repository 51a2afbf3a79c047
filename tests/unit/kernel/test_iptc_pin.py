"""The python-iptables version that kernel/iptc_compat was written for is the
one requirements.txt pins."""

import os
import re

from ansible_collections.vmsan.network.plugins.module_utils.kernel import iptc_compat

REPO = os.path.abspath(os.path.join(os.path.dirname(iptc_compat.__file__), "..", "..", ".."))


def test_the_compat_module_checks_the_pinned_python_iptables():
    with open(os.path.join(REPO, "requirements.txt")) as handle:
        pinned = re.search(r"^python-iptables==(\S+)", handle.read(), re.M).group(1)
    assert iptc_compat.PINNED_VERSION == pinned
