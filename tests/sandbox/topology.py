"""Names and addresses of the sandbox network (documented in docs/testing.md).

Only documentation ranges (RFC 5737, RFC 3849) appear here, and they exist
only inside the sandbox's namespaces.
"""

# host <-> internet link
UPLINK_IFNAME = "uplink0"  # in the host namespace
INET_IFNAME = "eth0"  # its peer, in the internet namespace
HOST_UPLINK_IP = "198.51.100.2"
INET_UPLINK_IP = "198.51.100.1"
UPLINK_PREFIXLEN = 24
HOST_UPLINK_IP6 = "2001:db8:100::2"
INET_UPLINK_IP6 = "2001:db8:100::1"
UPLINK_PREFIXLEN6 = 64

# addresses of the internet's servers (on the internet namespace's lo)
WEB_A = "203.0.113.10"
WEB_B = "203.0.113.11"
WEB_APEX = "203.0.113.200"
AUTH_DNS = "203.0.113.53"
BAD_WEB = "192.0.2.10"
ROGUE_DNS = "192.0.2.53"
INET_IP6 = "2001:db8::1"

INTERNET_IPS = [WEB_A, WEB_B, WEB_APEX, AUTH_DNS, BAD_WEB, ROGUE_DNS]

# ports of the internet's servers
GREETING_PORT = 9000  # TCP and UDP: "hello <local-ip> <peer-ip>"
STREAM_PORT = 9001  # TCP: a line every 20 ms
HTTP_PORT = 80
DOT_PORT = 853
DOH_PORT = 443
IPERF_PORT = 5201

GUEST_IFNAME = "eth0"
GUEST_PREFIXLEN = 30  # the /30 of docs/contract.md, "Addressing"
