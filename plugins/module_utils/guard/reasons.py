"""Why the guard decided as it did, as a few fixed words: the label a
decision is counted under (``NamespaceGuard.decisions``, and the metrics'
``reason``), never a name or an address, so the set of labels stays small.
The words for people are the Verdict's ``reason`` text. Pure."""

# accepted
NAME = "name"                   # SNI or Host allowed, and the address pinned to it
PORT = "port"                   # a name:port[/udp] entry allows a name the address is pinned to

# refused
NOT_ALLOWED = "not_allowed"     # the name asked for is not on the list
NOT_PINNED = "not_pinned"       # on the list, but the address was not learned for it (fronting)
NO_NAME = "no_name"             # no SNI or Host, or an IP literal in it
MALFORMED = "malformed"         # a ClientHello or request head that does not read
PROTOCOL = "protocol"           # neither TLS nor HTTP/1.x (SSH, raw bytes) and no port entry
UDP_PORT = "udp_port"           # UDP to a port no /udp entry names
STREAM = "stream"               # the stream's start was not seen, or contradicts itself
TIMEOUT = "timeout"             # held longer than its time without a complete hello or head
LIMIT = "limit"                 # more packets, bytes or flows than one may hold
UNKNOWN_VM = "unknown_vm"       # no guarded VM has the source address

# after a decision
POLICY_CHANGE = "policy_change"  # an accepted flow cut because its name (or port entry) left the list
