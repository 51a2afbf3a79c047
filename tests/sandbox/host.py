"""The sandbox's "host": the namespace where the product runs, as if it were
the machine. Its only way out is the uplink to the internet namespace."""

from . import topology as t
from .endpoint import Endpoint


class Host(Endpoint):
    """The product's namespace. IP forwarding and netfilter are left as the
    kernel makes them in a new namespace: configuring them is the product's job.

    ``serve_tcp(addr, port)`` runs a server here, e.g. to prove that a guest
    cannot reach the host's own services.
    """

    label = "host"
    dns_server = t.AUTH_DNS

    def connect_uplink(self, internet):
        """Make the veth pair host:uplink0 <-> internet:eth0 and the routes out.

        The pair is made from inside the host namespace with its peer placed
        straight into the internet namespace, so no link ever exists in the
        machine's own namespace, even for a moment.
        """
        self.ip(
            f"link add {t.UPLINK_IFNAME} type veth peer name {t.INET_IFNAME} netns {internet.name}",
            f"addr add {t.HOST_UPLINK_IP}/{t.UPLINK_PREFIXLEN} dev {t.UPLINK_IFNAME}",
            f"addr add {t.HOST_UPLINK_IP6}/{t.UPLINK_PREFIXLEN6} dev {t.UPLINK_IFNAME} nodad",
            f"link set {t.UPLINK_IFNAME} up",
        )
        internet.configure()
        # Static IPv6 neighbours: neighbour discovery on a link that has just
        # come up loses its first solicitation, which costs a second.
        host_mac = self.ip_json("link", "show", t.UPLINK_IFNAME)[0]["address"]
        inet_mac = internet.ip_json("link", "show", t.INET_IFNAME)[0]["address"]
        internet.ip(
            f"neigh replace {t.HOST_UPLINK_IP6} lladdr {host_mac} dev {t.INET_IFNAME} nud permanent"
        )
        self.ip(
            f"neigh replace {t.INET_UPLINK_IP6} lladdr {inet_mac} dev {t.UPLINK_IFNAME} nud permanent",
            f"route add default via {t.INET_UPLINK_IP}",
            f"route add default via {t.INET_UPLINK_IP6}",
        )
