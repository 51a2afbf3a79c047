#!/bin/sh
# /init of the vmsan real-guest initramfs (busybox ash).
#
# 1. mounts proc, sys, dev; loads the virtio modules listed in load.order;
# 2. configures the NIC from the kernel's nfsroot-style ip= argument:
#      ip=<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0-ip>:<dns1-ip>
#    (static only: autoconf must be off, none, static or empty);
# 3. runs the probes of vmsan.probes=SPEC[,SPEC...] one after the other, printing one
#      VMSAN-PROBE <index> <spec> ok|fail <detail>
#    line each (syntax: docs/real-guest.md);
# 4. prints VMSAN-DONE and powers off.
#
# Lines the host side parses all start with "VMSAN-".

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
set -f  # no globbing of probe specs

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run
exec </dev/null >/dev/console 2>&1

# Only emergencies from the kernel from now on: its messages would split our lines.
echo 1 >/proc/sys/kernel/printk

say() { echo "$*"; }

# One line, printable, at most 120 characters.
clean() { tr '\000-\037\177-\377' ' ' | tr -s ' ' | sed 's/^ //; s/ $//' | cut -c1-120; }

finish() {
	say "VMSAN-DONE"
	sync
	poweroff -f
	sleep 2
	reboot -f
}

CMDLINE=$(cat /proc/cmdline)
IP_ARG=""
PROBES=""
TIMEOUT=3
for w in $CMDLINE; do
	case "$w" in
		ip=*) IP_ARG=${w#ip=} ;;
		vmsan.probes=*) PROBES=${w#vmsan.probes=} ;;
		vmsan.timeout=*) TIMEOUT=${w#vmsan.timeout=} ;;
	esac
done
case "$TIMEOUT" in '' | *[!0-9]* | 0) TIMEOUT=3 ;; esac

# ------------------------------------------------------------------ modules
KVER=$(uname -r)
MODFAIL=""
while read -r m; do
	[ -n "$m" ] || continue
	insmod "/lib/modules/$KVER/$m.ko" 2>/tmp/insmod.err || MODFAIL="$MODFAIL $m($(clean </tmp/insmod.err))"
done <"/lib/modules/$KVER/load.order"
[ -z "$MODFAIL" ] || say "VMSAN-MODULES fail$MODFAIL"

# ------------------------------------------------------------------ network
is_ipv4() {
	case "$1" in
		'' | *[!0-9.]* | .* | *. | *..*) return 1 ;;
	esac
	IFS=. read -r a b c d e <<EOF
$1
EOF
	[ -n "$d" ] && [ -z "$e" ] || return 1
	for o in "$a" "$b" "$c" "$d"; do
		[ "$o" -le 255 ] 2>/dev/null || return 1
	done
	return 0
}

NET_ERR=""
net_fail() { NET_ERR="${NET_ERR:+$NET_ERR; }$*"; }

configure_net() {
	if [ -z "$IP_ARG" ]; then
		net_fail "no ip= argument"
		return
	fi
	IFS=: read -r CLIENT SERVER GW MASK HOST DEV AUTOCONF DNS0 DNS1 EXTRA <<EOF
$IP_ARG
EOF
	[ -n "$DEV" ] || DEV=eth0
	case "$AUTOCONF" in
		off | none | static | '') ;;
		*) net_fail "autoconf '$AUTOCONF' unsupported (static only)" ;;
	esac
	is_ipv4 "$CLIENT" || { net_fail "bad client ip '$CLIENT'"; return; }
	is_ipv4 "$MASK" || { net_fail "bad netmask '$MASK'"; return; }
	PREFIX=$(ipcalc -p "$CLIENT" "$MASK" 2>/dev/null)
	PREFIX=${PREFIX#PREFIX=}
	[ -n "$PREFIX" ] || { net_fail "bad netmask '$MASK'"; return; }
	# the NIC may take a moment to appear after virtio_net loads
	i=0
	while [ ! -e "/sys/class/net/$DEV" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	[ -e "/sys/class/net/$DEV" ] || { net_fail "no device $DEV"; return; }
	# The guest only speaks IPv4 (no router solicitations, no link-local chatter).
	echo 1 >"/proc/sys/net/ipv6/conf/$DEV/disable_ipv6" 2>/dev/null
	echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null
	ip link set lo up
	hostname "${HOST:-vmsan-guest}"
	ip link set "$DEV" up 2>/tmp/ip.err || net_fail "link up: $(clean </tmp/ip.err)"
	ip addr add "$CLIENT/$PREFIX" dev "$DEV" 2>/tmp/ip.err || net_fail "addr: $(clean </tmp/ip.err)"
	if [ -n "$GW" ]; then
		if ! is_ipv4 "$GW"; then
			net_fail "bad gateway '$GW'"
		elif ! ip route add default via "$GW" dev "$DEV" 2>/tmp/ip.err; then
			net_fail "route default via $GW: $(clean </tmp/ip.err)"
		fi
	fi
	: >/etc/resolv.conf
	for ns in "$DNS0" "$DNS1"; do
		[ -n "$ns" ] || continue
		if is_ipv4 "$ns"; then
			echo "nameserver $ns" >>/etc/resolv.conf
		else
			net_fail "bad dns '$ns'"
		fi
	done
}
configure_net
MAC=$(cat "/sys/class/net/${DEV:-eth0}/address" 2>/dev/null)
NETINFO="dev=${DEV:-eth0} mac=${MAC:-none} addr=${CLIENT:-none}/${PREFIX:-none} gw=${GW:-none} dns=${DNS0:-none}${DNS1:+,$DNS1}"
if [ -z "$NET_ERR" ]; then
	say "VMSAN-NET ok $NETINFO"
else
	say "VMSAN-NET fail $NETINFO error=$(echo "$NET_ERR" | clean)"
fi

# ------------------------------------------------------------------ probes
# resolve NAME [SERVER] [TYPE] -> R_ADDRS (comma separated) or R_ERR
resolve() {
	R_ADDRS=""
	R_ERR=""
	if is_ipv4 "$1"; then
		R_ADDRS=$1
		return 0
	fi
	if [ -z "$2" ] && ! grep -q '^nameserver' /etc/resolv.conf 2>/dev/null; then
		R_ERR="no nameserver"
		return 1
	fi
	nslookup -type="${3:-a}" -timeout="$TIMEOUT" -retry=1 "$1" $2 >/tmp/ns.out 2>&1
	R_ADDRS=$(awk '
		/^Name:/ { named = 1; next }
		named && /^Address/ { sub(/^Address[^:]*:[ \t]*/, ""); printf "%s%s", sep, $1; sep = "," }
	' /tmp/ns.out)
	[ -n "$R_ADDRS" ] && return 0
	if grep -q "[Cc]an't find" /tmp/ns.out; then
		R_ERR=$(sed -n "s/.*[Cc]an't find [^:]*: *//p" /tmp/ns.out | head -n 1 | clean)
	elif grep -q 'timed out\|no servers' /tmp/ns.out; then
		R_ERR="timeout"
	else
		R_ERR="noanswer"
	fi
	[ -n "$R_ERR" ] || R_ERR=noanswer
	return 1
}

RESULT=""
DETAIL=""
ok() { RESULT=ok; DETAIL=$*; }
fail() { RESULT=fail; DETAIL=$*; }

# what nc wrote to stderr, as a reason
nc_reason() {
	r=$(grep -v '^Terminated' /tmp/nc.err | clean)
	case "$r" in
		*"Connection refused"*) echo "refused" ;;
		*"No route"* | *"unreachable"*) echo "unreachable $r" ;;
		*"timed out"*) echo "timeout" ;;
		'') echo "${1:-timeout}" ;;
		*) echo "$r" ;;
	esac
}

probe_tcp() { # HOST:PORT
	host=${1%:*}
	port=${1##*:}
	[ "$host" != "$1" ] && [ -n "$port" ] || { fail "syntax: tcp:HOST:PORT"; return; }
	resolve "$host" || { fail "dns $R_ERR"; return; }
	ip=${R_ADDRS%%,*}
	timeout $((TIMEOUT + 1)) nc -w "$TIMEOUT" "$ip" "$port" >/tmp/nc.out 2>/tmp/nc.err
	n=$(wc -c </tmp/nc.out)
	if [ "$n" -gt 0 ]; then
		ok "bytes=$n ip=$ip payload=$(head -c 100 /tmp/nc.out | clean)"
	elif ! grep -qv '^Terminated' /tmp/nc.err; then
		# connected (no error), but the peer sent nothing before closing or timing out
		fail "nopayload ip=$ip"
	else
		fail "$(nc_reason) ip=$ip"
	fi
}

probe_http() { # HOST[:PORT][/PATH]
	hostport=${1%%/*}
	path=${1#"$hostport"}
	[ -n "$path" ] || path=/
	host=${hostport%%:*}
	port=${hostport#"$host"}
	port=${port#:}
	[ -n "$port" ] || port=80
	resolve "$host" || { fail "dns $R_ERR"; return; }
	ip=${R_ADDRS%%,*}
	hosthdr=$host
	[ "$port" = 80 ] || hosthdr="$host:$port"
	# busybox wget resolves names through glibc's NSS, which a static binary cannot
	# load: connect to the address and send the name in the Host header.
	timeout "$TIMEOUT" wget -q -O /tmp/http.out --header "Host: $hosthdr" "http://$ip:$port$path" 2>/tmp/http.err
	rc=$?
	n=0
	[ -f /tmp/http.out ] && n=$(wc -c </tmp/http.out)
	if [ $rc -eq 0 ] && [ "$n" -gt 0 ]; then
		ok "bytes=$n ip=$ip body=$(head -c 100 /tmp/http.out | clean)"
	elif [ $rc -eq 0 ]; then
		fail "nopayload ip=$ip"
	elif [ $rc -eq 124 ] || [ $rc -eq 143 ]; then
		fail "timeout ip=$ip"
	else
		r=$(clean </tmp/http.err)
		case "$r" in
			*"Connection refused"*) r=refused ;;
		esac
		fail "${r:-error rc=$rc} ip=$ip"
	fi
	rm -f /tmp/http.out
}

probe_dns() { # NAME[@SERVER] ; $2 = record type
	name=${1%%@*}
	server=${1#"$name"}
	server=${server#@}
	resolve "$name" "$server" "$2"
	if is_ipv4 "$name"; then
		fail "syntax: not a name"
	elif [ -n "$R_ADDRS" ]; then
		ok "addrs=$R_ADDRS"
	else
		fail "$R_ERR"
	fi
}

probe_ping() { # HOST
	resolve "$1" || { fail "dns $R_ERR"; return; }
	ip=${R_ADDRS%%,*}
	if ping -c 1 -W "$TIMEOUT" "$ip" >/tmp/ping.out 2>&1; then
		ok "ip=$ip $(grep -o 'time=[0-9.]* ms' /tmp/ping.out | head -n 1)"
	else
		fail "noreply ip=$ip"
	fi
}

# uptime in tenths of a second
now_ds() { awk '{ printf "%d", $1 * 10 }' /proc/uptime; }

probe_listen() { # tcp:PORT:SECS[:COUNT] ; $2 = index, $3 = spec
	IFS=: read -r proto port secs count rest <<EOF
$1
EOF
	if [ "$proto" != tcp ] || ! [ "$port" -gt 0 ] 2>/dev/null || ! [ "$secs" -gt 0 ] 2>/dev/null; then
		fail "syntax: listen:tcp:PORT:SECS[:COUNT]"
		return
	fi
	case "$count" in '' | *[!0-9]*) count=0 ;; esac
	log=/tmp/listen.$port
	: >"$log"
	cat >/tmp/serve.$port <<EOF
#!/bin/sh
echo "VMSAN-PAYLOAD listen $port $(hostname) ${CLIENT:-}"
echo x >>$log
EOF
	chmod +x /tmp/serve.$port
	nc -ll -p "$port" -e /tmp/serve.$port 2>/tmp/listen.err &
	pid=$!
	i=0
	while ! netstat -ltn 2>/dev/null | grep -q ":$port "; do
		i=$((i + 1))
		if [ $i -gt 40 ] || ! kill -0 $pid 2>/dev/null; then
			kill $pid 2>/dev/null
			fail "cannot listen $(clean </tmp/listen.err)"
			return
		fi
		sleep 0.05
	done
	say "VMSAN-READY $2 $3"
	end=$(($(now_ds) + secs * 10))
	while [ "$(now_ds)" -lt "$end" ]; do
		served=$(wc -l <"$log")
		[ "$count" -gt 0 ] && [ "$served" -ge "$count" ] && break
		sleep 0.1
	done
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	sleep 0.1
	served=$(wc -l <"$log")
	if [ "$served" -gt 0 ]; then
		ok "served=$served"
	else
		fail "served=0"
	fi
}

idx=0
OLDIFS=$IFS
IFS=,
set -- $PROBES
IFS=$OLDIFS
for spec in "$@"; do
	[ -n "$spec" ] || continue
	kind=${spec%%:*}
	arg=${spec#*:}
	[ "$kind" != "$spec" ] || arg=""
	RESULT=fail
	DETAIL="unknown probe"
	case "$kind" in
		tcp) probe_tcp "$arg" ;;
		http) probe_http "$arg" ;;
		dns) probe_dns "$arg" a ;;
		dns6) probe_dns "$arg" aaaa ;;
		ping) probe_ping "$arg" ;;
		listen) probe_listen "$arg" "$idx" "$spec" ;;
		sleep)
			case "$arg" in
				'' | *[!0-9.]*) fail "syntax: sleep:SECS" ;;
				*) sleep "$arg"; ok "slept=$arg" ;;
			esac
			;;
	esac
	say "VMSAN-PROBE $idx $spec $RESULT $(echo "$DETAIL" | clean)"
	idx=$((idx + 1))
done

finish
