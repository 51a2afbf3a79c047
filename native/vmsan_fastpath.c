/*
 * vmsan_fastpath: the name guard's per-packet reading in C (issue 13: every
 * guarded connection costs the host two netlink messages, two IPv4/TCP
 * headers and one ClientHello, and in Python those were half of the guard's
 * time per decision).
 *
 * Three functions, each a faster twin of a Python reference that stays the
 * definition (and the fallback where this module is not built):
 *
 *   parse(buffer, length)   kernel/nfqueue.py  _parse: the messages of one
 *                           netfilter netlink datagram -> (messages, acks)
 *   receive(fd, buf, limit) kernel/nfqueue.py  read_datagrams with _parse: the
 *                           same, with the system calls made here
 *   read_packet(data)       guard/packet.py    _read: the IPv4 packet's few
 *                           fields -> Packet or None
 *   hello_name(data)        guard/tls.py       the common case of read():
 *                           one record holding a whole, well-formed
 *                           ClientHello with one host_name -> (raw name
 *                           bytes, ech) or None ("ask the Python reader",
 *                           which also gives every refusal its reason)
 *
 * configure_messages(Message, QUEUED, LOGGED) and configure_packets(Packet)
 * hand over the namedtuple types and the kinds' strings once, at import (instances are made with tuple's
 * constructor for the subtype, as the types' _make does, without a call into
 * Python). The tests feed the same bytes, real and mutated, to both twins
 * (tests/unit/guard/test_guard_native.py).
 *
 * Everything is read against its declared length and the length of the
 * buffer: input is hostile (a guest writes the ClientHello and most of the
 * headers). Built by scripts/build-native.sh; docs/domain-policies.md, "The
 * guard's reading in C".
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <arpa/inet.h>

static PyObject *message_type, *packet_type, *kind_queued, *kind_logged;
static PyObject *dotted_cache;          /* 4-byte address (bytes) -> dotted str */
#define DOTTED_MAX 8192

#define QUEUE_PACKET ((3 << 8) | 0)     /* NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET */
#define LOG_PACKET ((4 << 8) | 0)       /* NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET */
#define NLMSG_ERROR 2
#define NFQA_PACKET_HDR 1
#define NFQA_MARK 3
#define NFQA_PAYLOAD 10
#define NFULA_MARK 2
#define NFULA_PAYLOAD 9

static uint32_t be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static unsigned be16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

/* A new instance of the namedtuple TYPE with the items of the plain tuple
 * ITEMS (a reference this takes), as tuple.__new__(TYPE, ITEMS) makes it. */
static PyObject *make(PyObject *type, PyObject *items)
{
    PyObject *out;
    Py_ssize_t i, n;
    if (items == NULL)
        return NULL;
    n = PyTuple_GET_SIZE(items);
    out = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, n);
    if (out != NULL) {
        for (i = 0; i < n; i++) {
            PyObject *item = PyTuple_GET_ITEM(items, i);
            Py_INCREF(item);
            PyTuple_SET_ITEM(out, i, item);
        }
    }
    Py_DECREF(items);
    return out;
}

static PyObject *configure_messages(PyObject *self, PyObject *args)
{
    PyObject *m, *q, *l;
    if (!PyArg_ParseTuple(args, "O!OO", &PyType_Type, &m, &q, &l))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)m, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure_messages: Message must be a tuple type");
        return NULL;
    }
    Py_INCREF(m); Py_INCREF(q); Py_INCREF(l);
    Py_XSETREF(message_type, m);
    Py_XSETREF(kind_queued, q);
    Py_XSETREF(kind_logged, l);
    Py_RETURN_NONE;
}

static PyObject *configure_packets(PyObject *self, PyObject *args)
{
    PyObject *p;
    if (!PyArg_ParseTuple(args, "O!", &PyType_Type, &p))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)p, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "configure_packets: Packet must be a tuple type");
        return NULL;
    }
    Py_INCREF(p);
    Py_XSETREF(packet_type, p);
    Py_RETURN_NONE;
}

static int configured(PyObject *type, const char *how)
{
    if (type == NULL) {
        PyErr_Format(PyExc_RuntimeError, "vmsan_fastpath.%s() was not called", how);
        return 0;
    }
    return 1;
}

/* The messages of the datagram DATA[0:END] appended to MESSAGES, its
 * error acks to ACKS (NULL: not kept), as kernel/nfqueue._parse reads them;
 * -1 with an exception set when Python runs out of memory. */
static int parse_into(const unsigned char *data, Py_ssize_t end, PyObject *messages, PyObject *acks)
{
    Py_ssize_t pos = 0;
    while (pos + 16 <= end) {
        uint32_t mlen, seq;
        uint16_t mtype;
        memcpy(&mlen, data + pos, 4);
        memcpy(&mtype, data + pos + 4, 2);
        memcpy(&seq, data + pos + 8, 4);
        if (mlen < 16 || (Py_ssize_t)mlen > end - pos)
            break;
        if (mtype == QUEUE_PACKET || mtype == LOG_PACKET) {
            int queued = mtype == QUEUE_PACKET;
            unsigned want_mark = queued ? NFQA_MARK : NFULA_MARK;
            unsigned want_payload = queued ? NFQA_PAYLOAD : NFULA_PAYLOAD;
            int have_id = 0;
            uint32_t packet_id = 0, mark = 0;
            Py_ssize_t pay_at = 0, pay_len = 0;
            Py_ssize_t at = pos + 20, stop = pos + mlen;
            while (at + 4 <= stop) {
                uint16_t alen, atype;
                memcpy(&alen, data + at, 2);
                memcpy(&atype, data + at + 2, 2);
                if (alen < 4 || alen > stop - at)
                    break;
                atype &= 0x3FFF;
                if (atype == want_payload) {
                    pay_at = at + 4;
                    pay_len = alen - 4;
                } else if (atype == want_mark && alen >= 8) {
                    mark = be32(data + at + 4);
                } else if (queued && atype == NFQA_PACKET_HDR && alen >= 8) {
                    packet_id = be32(data + at + 4);
                    have_id = 1;
                }
                at += (alen + 3) & ~3;
            }
            if (!queued || have_id) {
                PyObject *payload = PyBytes_FromStringAndSize((const char *)data + pay_at, pay_len);
                PyObject *pid = queued ? PyLong_FromUnsignedLong(packet_id) : (Py_INCREF(Py_None), Py_None);
                PyObject *pmark = PyLong_FromUnsignedLong(mark);
                PyObject *kind = queued ? kind_queued : kind_logged;
                PyObject *msg;
                if (payload == NULL || pid == NULL || pmark == NULL) {
                    Py_XDECREF(payload); Py_XDECREF(pid); Py_XDECREF(pmark);
                    return -1;
                }
                msg = make(message_type, PyTuple_Pack(4, kind, pid, pmark, payload));
                Py_DECREF(pid); Py_DECREF(pmark); Py_DECREF(payload);
                if (msg == NULL || PyList_Append(messages, msg) < 0) {
                    Py_XDECREF(msg);
                    return -1;
                }
                Py_DECREF(msg);
            }
        } else if (mtype == NLMSG_ERROR && mlen >= 20 && acks != NULL) {
            int32_t err;
            memcpy(&err, data + pos + 16, 4);
            PyObject *ack = Py_BuildValue("(lk)", -(long)err, (unsigned long)seq);
            if (ack == NULL || PyList_Append(acks, ack) < 0) {
                Py_XDECREF(ack);
                return -1;
            }
            Py_DECREF(ack);
        }
        pos += (mlen + 3) & ~3u;
    }
    return 0;
}

/* parse(buffer, length): as kernel/nfqueue._parse. */
static PyObject *parse(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t length = -1;
    PyObject *messages = NULL, *acks = NULL, *out = NULL;
    if (!configured(message_type, "configure_messages") || !PyArg_ParseTuple(args, "y*|n", &view, &length))
        return NULL;
    Py_ssize_t end = (length < 0 || length > view.len) ? view.len : length;
    messages = PyList_New(0);
    acks = PyList_New(0);
    if (messages != NULL && acks != NULL && parse_into(view.buf, end, messages, acks) == 0)
        out = PyTuple_Pack(2, messages, acks);
    Py_XDECREF(messages);
    Py_XDECREF(acks);
    PyBuffer_Release(&view);
    return out;
}

/*
 * receive(fd, buffer, limit, overflow_ok=0): the messages of the datagrams
 * waiting on the non-blocking netfilter socket FD, read into BUFFER
 * (writable), at most LIMIT datagrams, as kernel/nfqueue.read_datagrams reads
 * them with _parse (error acks are not kept): (messages, errno, overflows),
 * errno 0 when the socket had no more (or LIMIT was reached), else the error
 * that stopped the reading. ENOBUFS (the socket overflowed) stops it too,
 * unless OVERFLOW_OK: then it is counted in OVERFLOWS and the reading goes
 * on, as read_datagrams does with an ON_OVERFLOW. EINTR reads again.
 */
/* The receive loop of receive(): appends to MESSAGES; 0 with *ERR set (0 or
 * the errno that stopped it), -1 with a Python exception. OVERFLOWS: NULL,
 * or where ENOBUFS is counted and read over. */
static int receive_into(int fd, void *buf, Py_ssize_t len, int limit, PyObject *messages, int *err, int *overflows)
{
    int count;
    *err = 0;
    for (count = 0; count < limit; count++) {
        ssize_t n = recv(fd, buf, (size_t)len, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                count--;
                continue;
            }
            if (errno == ENOBUFS && overflows != NULL) {
                (*overflows)++;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                *err = errno;
            break;
        }
        if (parse_into(buf, n, messages, NULL) < 0)
            return -1;
    }
    return 0;
}

static PyObject *receive(PyObject *self, PyObject *args)
{
    int fd, limit, overflow_ok = 0, err = 0, overflows = 0;
    Py_buffer view;
    PyObject *messages, *out = NULL;
    if (!configured(message_type, "configure_messages")
        || !PyArg_ParseTuple(args, "iw*i|p", &fd, &view, &limit, &overflow_ok))
        return NULL;
    messages = PyList_New(0);
    if (messages != NULL
        && receive_into(fd, view.buf, view.len, limit, messages, &err, overflow_ok ? &overflows : NULL) == 0)
        out = Py_BuildValue("(Oii)", messages, err, overflows);
    Py_XDECREF(messages);
    PyBuffer_Release(&view);
    return out;
}

/* The dotted text of the 4 address bytes at P (a new reference). */
static PyObject *dotted(const unsigned char *p)
{
    PyObject *key = PyBytes_FromStringAndSize((const char *)p, 4), *text;
    if (key == NULL)
        return NULL;
    text = PyDict_GetItemWithError(dotted_cache, key);
    if (text != NULL) {
        Py_INCREF(text);
        Py_DECREF(key);
        return text;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    if (PyDict_GET_SIZE(dotted_cache) >= DOTTED_MAX)
        PyDict_Clear(dotted_cache);
    text = PyUnicode_FromFormat("%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
    if (text == NULL || PyDict_SetItem(dotted_cache, key, text) < 0) {
        Py_XDECREF(text);
        Py_DECREF(key);
        return NULL;
    }
    Py_DECREF(key);
    return text;
}

/* The fields guard/packet._read reads, in C. */
struct packet {
    unsigned proto, sport, dport, flags;
    uint32_t seq, ack;
    const unsigned char *src, *dst;     /* the 4 address bytes */
    const unsigned char *payload;
    Py_ssize_t payload_len;
};

/* 1 when D[0:N] is an IPv4 TCP or UDP packet guard/packet._read reads (P
 * filled, the UDP one with seq = ack = flags = 0), else 0 (it returns None). */
static int read_ipv4(const unsigned char *d, Py_ssize_t n, struct packet *p)
{
    if (n < 20)
        return 0;
    unsigned ihl = (d[0] & 0x0F) * 4, proto = d[9];
    if (d[0] >> 4 != 4 || ihl < 20 || (be16(d + 6) & 0x1FFF))
        return 0;
    Py_ssize_t total = be16(d + 2), end = total < n ? total : n;
    p->proto = proto;
    p->src = d + 12;
    p->dst = d + 16;
    if (proto == 6) {
        if (end < (Py_ssize_t)ihl + 20)
            return 0;
        const unsigned char *t = d + ihl;
        unsigned off = t[12] >> 4;
        Py_ssize_t start = ihl + off * 4;
        if (off < 5 || start > end)
            return 0;
        p->sport = be16(t);
        p->dport = be16(t + 2);
        p->seq = be32(t + 4);
        p->ack = be32(t + 8);
        p->flags = t[13];
        p->payload = d + start;
        p->payload_len = end - start;
        return 1;
    }
    if (proto == 17) {
        if (end < (Py_ssize_t)ihl + 8)
            return 0;
        const unsigned char *u = d + ihl;
        p->sport = be16(u);
        p->dport = be16(u + 2);
        p->seq = p->ack = 0;
        p->flags = 0;
        p->payload = u + 8;
        p->payload_len = end - ihl - 8;
        return 1;
    }
    return 0;
}

/* read_packet(data): as guard/packet._read. */
static PyObject *read_packet(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *out = NULL;
    struct packet p;
    if (!configured(packet_type, "configure_packets") || !PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    if (!read_ipv4(view.buf, view.len, &p)) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto done;
    }
    PyObject *src = dotted(p.src), *dst = src ? dotted(p.dst) : NULL;
    if (dst == NULL) {
        Py_XDECREF(src);
        goto done;
    }
    if (p.proto == 6)
        out = make(packet_type, Py_BuildValue("(ININIkkIy#)", p.proto, src, p.sport, dst, p.dport,
                                              (unsigned long)p.seq, (unsigned long)p.ack, p.flags,
                                              (const char *)p.payload, p.payload_len));
    else
        out = make(packet_type, Py_BuildValue("(ININIOOiy#)", p.proto, src, p.sport, dst, p.dport, Py_None,
                                              Py_None, 0, (const char *)p.payload, p.payload_len));
done:
    PyBuffer_Release(&view);
    return out;
}

/*
 * hello_name(data): the common case of guard/tls.read, with its checks in
 * its order: DATA starts with one handshake record (version 3.x, x <= 4,
 * 0 < length <= 16384) holding exactly one ClientHello; its body's fields
 * are well formed, its extensions fill it, none is given twice, and its
 * server_name extension holds exactly one host_name. Returns (name bytes,
 * ech) or None for anything else (Python reads it again and says why).
 */
#define MAX_RECORD 16384

/* 1 with NAME, NAME_LEN and ECH set when D[0:LEN] is the common case
 * hello_name reads, else 0. */
static int hello_core(const unsigned char *d, Py_ssize_t len, const unsigned char **name_out,
                      Py_ssize_t *name_len_out, int *ech_out)
{
    /* extension types seen: a bitmap of all 65536 */
    uint64_t seen[1024];
    if (len < 9 || d[0] != 22 || d[1] != 3 || d[2] > 4 || d[5] != 1)
        return 0;
    Py_ssize_t rlen = be16(d + 3), size = ((Py_ssize_t)d[6] << 16) | (d[7] << 8) | d[8];
    if (rlen <= 0 || rlen > MAX_RECORD || size + 4 != rlen || len < 5 + rlen)
        return 0;
    const unsigned char *b = d + 9;
    Py_ssize_t n = size, p;
    if (n < 35 || b[0] != 3)
        return 0;
    p = 34;
    unsigned sid = b[p];
    p += 1 + sid;
    if (sid > 32 || p + 2 > n)
        return 0;
    unsigned suites = be16(b + p);
    p += 2 + suites;
    if (suites < 2 || suites % 2 || p + 1 > n)
        return 0;
    unsigned methods = b[p];
    p += 1 + methods;
    if (methods < 1 || p > n || p == n)
        return 0;
    if (p + 2 > n || p + 2 + (Py_ssize_t)be16(b + p) != n)
        return 0;
    p += 2;
    memset(seen, 0, sizeof(seen));
    const unsigned char *name = NULL;
    Py_ssize_t name_len = 0;
    int have_sni = 0, ech = 0;
    while (p < n) {
        if (p + 4 > n)
            return 0;
        unsigned etype = be16(b + p), elen = be16(b + p + 2);
        Py_ssize_t start = p + 4;
        p = start + elen;
        if (p > n)
            return 0;
        if (seen[etype >> 6] & ((uint64_t)1 << (etype & 63)))
            return 0;
        seen[etype >> 6] |= (uint64_t)1 << (etype & 63);
        if (etype == 0) {
            const unsigned char *e = b + start;
            Py_ssize_t en = elen, q = 2;
            if (en < 2 || (Py_ssize_t)be16(e) != en - 2)
                return 0;
            while (q < en) {
                if (q + 3 > en)
                    return 0;
                unsigned ntype = e[q], nlen = be16(e + q + 1);
                Py_ssize_t nstart = q + 3;
                q = nstart + nlen;
                if (q > en)
                    return 0;
                if (ntype != 0)
                    continue;
                if (name != NULL)
                    return 0;
                name = e + nstart;
                name_len = nlen;
            }
            if (name == NULL)
                return 0;
            have_sni = 1;
        } else if (etype == 0xFE0D) {
            ech = 1;
        }
    }
    if (!have_sni)
        return 0;
    *name_out = name;
    *name_len_out = name_len;
    *ech_out = ech;
    return 1;
}

static PyObject *hello_name(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *out;
    const unsigned char *name;
    Py_ssize_t name_len;
    int ech;
    if (!PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    if (hello_core(view.buf, view.len, &name, &name_len, &ech))
        out = Py_BuildValue("(y#O)", (const char *)name, name_len, ech ? Py_True : Py_False);
    else {
        Py_INCREF(Py_None);
        out = Py_None;
    }
    PyBuffer_Release(&view);
    return out;
}

/*
 * guard_handle(guard, messages, now): guard/loop.NamespaceGuard.handle with
 * the common case of a guarded connection done here, on the guard's own
 * tables (so that everything else, in Python, sees what it would have made
 * itself):
 *
 *   a SYN-ACK copy of a flow the table does not know, with room for it:
 *     FlowTable.start's new start record (its kept verdict dropped);
 *   a copy of anything else but a SYN-ACK: counted, nothing to do;
 *   a queued TCP segment without SYN whose flow has a start record and
 *     nothing held, at offset 0, holding a whole one-record ClientHello
 *     (hello_core) whose name hostname.from_bytes takes, to a port no port
 *     entry names, of a VM whose plain entries allow the name and whose pins
 *     tie the destination to it: FlowTable._finish's accept and
 *     NamespaceGuard._tell's bookkeeping, and the NF_REPEAT verdict with the
 *     accept bit in the packet's mark.
 *
 * Every other message (and any message whose handling here fails before it
 * changed anything) goes, in its place in the order, to
 * guard._handle_one(msg, now), the definition: refusals, reassembly, late
 * packets, UDP, HTTP, the limits. Counters changed here are written back
 * before each such call and at the end. tests/unit/guard/test_guard_native.py
 * runs the same message sequences through both and compares every table.
 */
#define SEND_CHUNK ((8 << 20) / 8)      /* kernel/nfqueue.py: RCVBUF // 8 per send() */
static PyObject *flow_type, *action_accept, *count_key, *code_name, *proto_tcp, *from_bytes;
static long stream_cap;
static unsigned long mark_mask, mark_accepted;
static long verdict_repeat;
static PyObject *s_flows, *s_decided, *s_linger, *s_max_flows, *s_vms, *s_pins, *s_names, *s_counters,
    *s_decisions, *s_accepted, *s_handle_one, *s_policy, *s_vm_id, *s_ports, *s_allowed_normal, *s_isn,
    *s_held, *s_chunks, *s_accepted_per_vm, *s_messages, *s_logged, *s_move_to_end, *s_popitem, *tcp_number, *one;

static PyObject *configure_guard(PyObject *self, PyObject *args)
{
    PyObject *f, *a, *k, *c, *t, *fb;
    if (!PyArg_ParseTuple(args, "O!OO!OOOlkkl", &PyType_Type, &f, &a, &PyTuple_Type, &k, &c, &t, &fb, &stream_cap,
                          &mark_mask, &mark_accepted, &verdict_repeat))
        return NULL;
#define INTERN(var, text) if (var == NULL && (var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_flows, "flows"); INTERN(s_decided, "decided"); INTERN(s_linger, "linger");
    INTERN(s_max_flows, "max_flows"); INTERN(s_vms, "vms"); INTERN(s_pins, "pins"); INTERN(s_names, "names");
    INTERN(s_counters, "counters"); INTERN(s_decisions, "decisions"); INTERN(s_accepted, "accepted");
    INTERN(s_handle_one, "_handle_one"); INTERN(s_policy, "policy"); INTERN(s_vm_id, "vm_id");
    INTERN(s_ports, "ports"); INTERN(s_allowed_normal, "allowed_normal"); INTERN(s_isn, "isn");
    INTERN(s_held, "held"); INTERN(s_accepted_per_vm, "accepted_per_vm"); INTERN(s_chunks, "chunks"); INTERN(s_messages, "messages");
    INTERN(s_logged, "logged"); INTERN(s_move_to_end, "move_to_end"); INTERN(s_popitem, "popitem");
#undef INTERN
    if ((tcp_number == NULL && (tcp_number = PyLong_FromLong(6)) == NULL)
        || (one == NULL && (one = PyLong_FromLong(1)) == NULL))
        return NULL;
    Py_INCREF(f); Py_INCREF(a); Py_INCREF(k); Py_INCREF(c); Py_INCREF(t); Py_INCREF(fb);
    Py_XSETREF(flow_type, f);
    Py_XSETREF(action_accept, a);
    Py_XSETREF(count_key, k);
    Py_XSETREF(code_name, c);
    Py_XSETREF(proto_tcp, t);
    Py_XSETREF(from_bytes, fb);
    Py_RETURN_NONE;
}

/* What one call of guard_handle works on: the guard's tables, fetched once. */
struct guard_view {
    PyObject *table, *flows, *decided, *linger, *vms, *pins_names, *counters, *decisions, *accepted, *slow;
    Py_ssize_t max_flows, accepted_per_vm;
    long n_messages, n_logged, n_accepted;      /* counters not yet written back */
};

static void view_clear(struct guard_view *g)
{
    Py_CLEAR(g->table); Py_CLEAR(g->flows); Py_CLEAR(g->decided); Py_CLEAR(g->linger); Py_CLEAR(g->vms);
    Py_CLEAR(g->pins_names); Py_CLEAR(g->counters); Py_CLEAR(g->decisions); Py_CLEAR(g->accepted);
    Py_CLEAR(g->slow);
}

static int view_fetch(struct guard_view *g, PyObject *guard)
{
    PyObject *pins, *max_flows;
    memset(g, 0, sizeof(*g));
    if ((g->table = PyObject_GetAttr(guard, s_flows)) == NULL
        || (g->flows = PyObject_GetAttr(g->table, s_flows)) == NULL
        || (g->decided = PyObject_GetAttr(g->table, s_decided)) == NULL
        || (g->linger = PyObject_GetAttr(g->table, s_linger)) == NULL
        || (g->vms = PyObject_GetAttr(guard, s_vms)) == NULL
        || (g->counters = PyObject_GetAttr(guard, s_counters)) == NULL
        || (g->decisions = PyObject_GetAttr(guard, s_decisions)) == NULL
        || (g->accepted = PyObject_GetAttr(guard, s_accepted)) == NULL
        || (g->slow = PyObject_GetAttr(guard, s_handle_one)) == NULL)
        return -1;
    if (!PyDict_Check(g->flows) || !PyDict_Check(g->decided) || !PyDict_Check(g->vms)
        || !PyDict_Check(g->decisions) || !PyDict_Check(g->accepted)) {
        PyErr_SetString(PyExc_TypeError, "guard_handle: the guard's tables must be dicts");
        return -1;
    }
    if ((pins = PyObject_GetAttr(guard, s_pins)) == NULL)
        return -1;
    g->pins_names = PyObject_GetAttr(pins, s_names);
    Py_DECREF(pins);
    if (g->pins_names == NULL || (max_flows = PyObject_GetAttr(g->table, s_max_flows)) == NULL)
        return -1;
    g->max_flows = PyLong_AsSsize_t(max_flows);
    Py_DECREF(max_flows);
    if (g->max_flows == -1 && PyErr_Occurred())
        return -1;
    if ((max_flows = PyObject_GetAttr(guard, s_accepted_per_vm)) == NULL)
        return -1;
    g->accepted_per_vm = PyLong_AsSsize_t(max_flows);
    Py_DECREF(max_flows);
    return g->accepted_per_vm == -1 && PyErr_Occurred() ? -1 : 0;
}

static int add_counter(PyObject *counters, PyObject *name, long delta)
{
    PyObject *value, *sum, *step;
    int rc;
    if (delta == 0)
        return 0;
    if ((value = PyObject_GetAttr(counters, name)) == NULL)
        return -1;
    step = PyLong_FromLong(delta);
    sum = step ? PyNumber_Add(value, step) : NULL;
    Py_DECREF(value);
    Py_XDECREF(step);
    if (sum == NULL)
        return -1;
    rc = PyObject_SetAttr(counters, name, sum);
    Py_DECREF(sum);
    return rc;
}

/* The counters changed here, written to guard.counters. */
static int view_flush(struct guard_view *g)
{
    int rc = 0;
    if (add_counter(g->counters, s_messages, g->n_messages) < 0 || add_counter(g->counters, s_logged, g->n_logged) < 0
        || add_counter(g->counters, s_accepted, g->n_accepted) < 0)
        rc = -1;
    g->n_messages = g->n_logged = g->n_accepted = 0;
    return rc;
}

/* (a, aport, b, bport) as FlowTable keys are, a new reference. */
static PyObject *flow_key(const unsigned char *a, unsigned aport, const unsigned char *b, unsigned bport)
{
    PyObject *sa = dotted(a), *sb = sa ? dotted(b) : NULL, *key = NULL;
    if (sb != NULL)
        key = Py_BuildValue("(NINI)", sa, aport, sb, bport);
    else
        Py_XDECREF(sa);
    return key;
}

/* OrderedDict.popitem(last=False) when LEN(D) > LIMIT. */
static int trim(PyObject *d, Py_ssize_t limit)
{
    if (PyDict_GET_SIZE(d) <= limit)
        return 0;
    PyObject *gone = PyObject_CallMethodOneArg(d, s_popitem, Py_False);
    Py_XDECREF(gone);
    return gone == NULL ? -1 : 0;
}

/* A SYN-ACK copy: 1 taken, 0 for Python, -1 failed (before any change). */
static int fast_logged(struct guard_view *g, PyObject *payload, PyObject *now)
{
    struct packet p;
    PyObject *key, *known, *flow;
    int rc = 0;
    if (!read_ipv4((const unsigned char *)PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &p)
        || p.proto != 6 || (p.flags & 0x12) != 0x12) {
        g->n_logged++;                          /* _one: counted, nothing else */
        return 1;
    }
    if (PyDict_GET_SIZE(g->flows) >= g->max_flows)
        return 0;                               /* FlowTable._room's work */
    if ((key = flow_key(p.dst, p.dport, p.src, p.sport)) == NULL)
        return -1;
    known = PyDict_GetItemWithError(g->flows, key);
    if (known != NULL || PyErr_Occurred()) {
        rc = known != NULL ? 0 : -1;            /* a record already: FlowTable.start decides */
        goto done;
    }
    /* FlowTable.start: the kept verdict goes, the new record comes */
    int kept = PyDict_Contains(g->decided, key);
    if (kept < 0 || (kept && PyObject_DelItem(g->decided, key) < 0)) {
        rc = -1;
        goto done;
    }
    flow = PyObject_CallFunction(flow_type, "kO", (unsigned long)p.ack, now);
    if (flow == NULL || PyObject_SetItem(g->flows, key, flow) < 0) {
        Py_XDECREF(flow);
        rc = -1;
        goto done;
    }
    Py_DECREF(flow);
    g->n_logged++;
    rc = 1;
done:
    Py_DECREF(key);
    return rc;
}

/* Whether OBJ is a Python list (or dict) with no items: 1, 0, or -1. */
static int empty_attr(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    int rc;
    if (value == NULL)
        return -1;
    rc = PyObject_Length(value) == 0;
    if (PyErr_Occurred())
        rc = -1;
    Py_DECREF(value);
    return rc;
}

/* A queued packet: 1 taken (its verdict appended to OUT), 0 for Python
 * (nothing changed), -1 failed. */
static int fast_queued(struct guard_view *g, PyObject *pid, PyObject *mark_obj, PyObject *payload, PyObject *now,
                       PyObject *out)
{
    struct packet p;
    PyObject *key = NULL, *flow, *isn_obj = NULL, *vm, *policy = NULL, *vm_id = NULL, *name = NULL, *raw,
        *pinned = NULL, *allowed = NULL, *names = NULL, *tmp;
    const unsigned char *sni;
    Py_ssize_t sni_len;
    int ech, rc = 0, hit;
    if (!read_ipv4((const unsigned char *)PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), &p)
        || p.proto != 6 || (p.flags & 0x02) || p.payload_len == 0)
        return 0;
    Py_ssize_t prefix_len = p.payload_len < stream_cap ? p.payload_len : stream_cap;
    if (!hello_core(p.payload, prefix_len, &sni, &sni_len, &ech))
        return 0;
    if ((key = flow_key(p.src, p.sport, p.dst, p.dport)) == NULL)
        return -1;
    rc = -1;
    if ((hit = PyDict_Contains(g->decided, key)) != 0) {   /* a late packet: FlowTable.packet */
        rc = hit < 0 ? -1 : 0;
        goto done;
    }
    flow = PyDict_GetItemWithError(g->flows, key);      /* borrowed */
    if (flow == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    Py_INCREF(flow);
    isn_obj = PyObject_GetAttr(flow, s_isn);
    if (isn_obj == NULL)
        goto done_flow;
    if (!PyLong_Check(isn_obj)) {
        rc = 0;
        goto done_flow;
    }
    unsigned long isn = PyLong_AsUnsignedLongMask(isn_obj);
    if (PyErr_Occurred())
        goto done_flow;
    if (((p.seq - (uint32_t)isn) & 0xFFFFFFFFu) != 0) {  /* not its first byte: placed in Python */
        rc = 0;
        goto done_flow;
    }
    if ((hit = empty_attr(flow, s_held)) <= 0 || (hit = empty_attr(flow, s_chunks)) <= 0) {
        rc = hit < 0 ? -1 : 0;
        goto done_flow;
    }
    /* NamespaceGuard._decide_tcp and decide.tcp, for an accept only */
    vm = PyDict_GetItemWithError(g->vms, PyTuple_GET_ITEM(key, 0));
    if (vm == NULL) {
        rc = PyErr_Occurred() ? -1 : 0;
        goto done_flow;
    }
    if ((policy = PyObject_GetAttr(vm, s_policy)) == NULL || (vm_id = PyObject_GetAttr(vm, s_vm_id)) == NULL)
        goto done_flow;
    if ((tmp = PyObject_GetAttr(policy, s_ports)) == NULL)
        goto done_flow;
    hit = PyObject_IsTrue(tmp);
    if (hit > 0) {                              /* decide_port: a port entry for this port? */
        PyObject *port_key = Py_BuildValue("(OI)", proto_tcp, p.dport);
        hit = port_key == NULL ? -1 : (PyDict_Check(tmp) ? PyDict_Contains(tmp, port_key) : PySequence_Contains(tmp, port_key));
        Py_XDECREF(port_key);
    }
    Py_DECREF(tmp);
    if (hit != 0) {
        rc = hit < 0 ? -1 : 0;
        goto done_flow;
    }
    raw = PyBytes_FromStringAndSize((const char *)sni, sni_len);
    if (raw == NULL)
        goto done_flow;
    name = PyObject_CallOneArg(from_bytes, raw);
    Py_DECREF(raw);
    if (name == NULL)
        goto done_flow;
    if (name == Py_None) {
        rc = 0;
        goto done_flow;
    }
    if ((names = PyObject_GetAttr(policy, s_names)) == NULL
        || (allowed = PyObject_CallMethodOneArg(names, s_allowed_normal, name)) == NULL)
        goto done_flow;
    if ((hit = PyObject_IsTrue(allowed)) <= 0) {
        rc = hit < 0 ? -1 : 0;
        goto done_flow;
    }
    pinned = PyObject_CallFunctionObjArgs(g->pins_names, vm_id, PyTuple_GET_ITEM(key, 2), now, NULL);
    if (pinned == NULL)
        goto done_flow;
    if ((hit = PySequence_Contains(pinned, name)) <= 0) {
        rc = hit < 0 ? -1 : 0;
        goto done_flow;
    }
    /* FlowTable._finish: the record goes, the verdict is kept for late packets */
    rc = -1;
    if (PyObject_DelItem(g->flows, key) < 0)
        goto done_flow;
    {
        PyObject *until = PyNumber_Add(now, g->linger), *kept;
        kept = until ? PyTuple_Pack(2, action_accept, until) : NULL;
        Py_XDECREF(until);
        if (kept == NULL || PyObject_SetItem(g->decided, key, kept) < 0) {
            Py_XDECREF(kept);
            goto done_flow;
        }
        Py_DECREF(kept);
        if (trim(g->decided, 4 * g->max_flows) < 0)
            goto done_flow;
    }
    /* NamespaceGuard._tell: counted, and _remember'd for a policy change */
    g->n_accepted++;
    {
        PyObject *by = PyDict_GetItemWithError(g->decisions, vm_id), *count, *sum, *key6, *entry;
        if (by == NULL) {
            if (PyErr_Occurred() || (by = PyDict_New()) == NULL)
                goto done_flow;
            if (PyDict_SetItem(g->decisions, vm_id, by) < 0) {
                Py_DECREF(by);
                goto done_flow;
            }
            Py_DECREF(by);
        }
        count = PyDict_GetItemWithError(by, count_key);
        if (count == NULL && PyErr_Occurred())
            goto done_flow;
        sum = count ? PyNumber_Add(count, one) : (Py_INCREF(one), one);
        if (sum == NULL || PyDict_SetItem(by, count_key, sum) < 0) {
            Py_XDECREF(sum);
            goto done_flow;
        }
        Py_DECREF(sum);
        key6 = PyTuple_Pack(5, tcp_number, PyTuple_GET_ITEM(key, 0), PyTuple_GET_ITEM(key, 1),
                            PyTuple_GET_ITEM(key, 2), PyTuple_GET_ITEM(key, 3));
        if (key6 == NULL)
            goto done_flow;
        hit = PyDict_Contains(g->accepted, key6);
        entry = hit < 0 ? NULL : PyTuple_Pack(4, vm_id, code_name, name, Py_False);
        if (entry == NULL || PyObject_SetItem(g->accepted, key6, entry) < 0) {
            Py_XDECREF(entry);
            Py_DECREF(key6);
            goto done_flow;
        }
        Py_DECREF(entry);
        if (hit) {
            PyObject *moved = PyObject_CallMethodOneArg(g->accepted, s_move_to_end, key6);
            Py_XDECREF(moved);
            if (moved == NULL) {
                Py_DECREF(key6);
                goto done_flow;
            }
        }
        Py_DECREF(key6);
        Py_ssize_t nvms = PyDict_GET_SIZE(g->vms);
        if (trim(g->accepted, g->accepted_per_vm * (nvms > 1 ? nvms : 1)) < 0)
            goto done_flow;
    }
    /* NamespaceGuard._verdicts: NF_REPEAT, the accept bit in the mark */
    {
        unsigned long mark = PyLong_AsUnsignedLongMask(mark_obj);
        PyObject *item;
        if (PyErr_Occurred())
            goto done_flow;
        item = Py_BuildValue("(Olk)", pid, verdict_repeat, (mark & ~mark_mask) | mark_accepted);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            goto done_flow;
        }
        Py_DECREF(item);
    }
    rc = 1;
done_flow:
    Py_DECREF(flow);
done:
    Py_XDECREF(key); Py_XDECREF(isn_obj); Py_XDECREF(policy); Py_XDECREF(vm_id); Py_XDECREF(name);
    Py_XDECREF(names); Py_XDECREF(allowed); Py_XDECREF(pinned);
    return rc;
}

static PyObject *handle_list(PyObject *guard, PyObject *messages, PyObject *now)
{
    PyObject *out = NULL, *seq = NULL;
    struct guard_view g;
    if (view_fetch(&g, guard) < 0)
        goto done;
    if ((seq = PySequence_Fast(messages, "guard_handle: messages must be a sequence")) == NULL
        || (out = PyList_New(0)) == NULL)
        goto done;
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *msg = PySequence_Fast_GET_ITEM(seq, i), *kind, *payload;
        int rc = 0;
        if (PyTuple_Check(msg) && PyTuple_GET_SIZE(msg) == 4 && PyBytes_Check(payload = PyTuple_GET_ITEM(msg, 3))) {
            kind = PyTuple_GET_ITEM(msg, 0);
            if (kind == kind_logged)
                rc = fast_logged(&g, payload, now);
            else if (kind == kind_queued && PyLong_Check(PyTuple_GET_ITEM(msg, 1))
                     && PyLong_Check(PyTuple_GET_ITEM(msg, 2)))
                rc = fast_queued(&g, PyTuple_GET_ITEM(msg, 1), PyTuple_GET_ITEM(msg, 2), payload, now, out);
        }
        if (rc == 1) {
            g.n_messages++;
            continue;
        }
        if (rc < 0)
            PyErr_Clear();          /* _handle_one reads it again, and counts a fault if it fails too */
        if (view_flush(&g) < 0)
            goto fail;
        PyObject *more = PyObject_CallFunctionObjArgs(g.slow, msg, now, NULL);
        if (more == NULL)
            goto fail;
        PyObject *extended = PySequence_InPlaceConcat(out, more);
        Py_DECREF(more);
        if (extended == NULL)
            goto fail;
        Py_DECREF(extended);
    }
    if (view_flush(&g) < 0)
        goto fail;
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_XDECREF(seq);
    view_clear(&g);
    return out;
}

static PyObject *guard_handle(PyObject *self, PyObject *args)
{
    PyObject *guard, *messages, *now;
    if (!configured(flow_type, "configure_guard") || !configured(message_type, "configure_messages")
        || !PyArg_ParseTuple(args, "OOO", &guard, &messages, &now))
        return NULL;
    return handle_list(guard, messages, now);
}

static PyObject *verdict_blob(unsigned queue_num, PyObject *items);

/*
 * guard_pump(guard, fd, log_fd, buffer, queue_num, queue_limit, log_limit):
 * guard/loop.py's NamespaceGuard.pump on a kernel.nfqueue.QueueSocket (FD its
 * queue's socket, LOG_FD its log group's or -1, BUFFER its receive buffer, the
 * rest its queue number and its reads' limits: QueueSocket.native_handles),
 * in one call:
 * QueueSocket.receive(timeout=0) (the queue read, then, if it gave anything,
 * the log group's copies, first in the list), NamespaceGuard.handle (its
 * clock read, _now set), and QueueSocket.verdicts with the guard's pending
 * conntrack deletes after them. Returns (verdicts, errno, where, overflows):
 * WHERE 0 when all went well, 1 the queue read failed with ERRNO (nothing
 * handled), 2 the log group's read, 3 the send; OVERFLOWS the log group's
 * ENOBUFS read over. The caller raises NfqueueError as QueueSocket would.
 */
static PyObject *guard_pump(PyObject *self, PyObject *args)
{
    PyObject *guard, *messages = NULL, *logged = NULL, *now = NULL, *items = NULL, *out = NULL, *cut = NULL,
        *blob = NULL;
    Py_buffer view;
    int fd, log_fd, queue_limit, log_limit, err = 0, where = 0, overflows = 0;
    unsigned queue_num;
    Py_ssize_t count = 0;
    if (!configured(flow_type, "configure_guard") || !configured(message_type, "configure_messages")
        || !PyArg_ParseTuple(args, "Oiiw*Iii", &guard, &fd, &log_fd, &view, &queue_num, &queue_limit, &log_limit))
        return NULL;
    if ((messages = PyList_New(0)) == NULL
        || receive_into(fd, view.buf, view.len, queue_limit, messages, &err, NULL) < 0)
        goto done;
    if (err) {
        where = 1;
        goto answer;
    }
    if (PyList_GET_SIZE(messages) && log_fd >= 0) {
        if ((logged = PyList_New(0)) == NULL
            || receive_into(log_fd, view.buf, view.len, log_limit, logged, &err, &overflows) < 0)
            goto done;
        if (err) {
            where = 2;
            goto answer;
        }
        if (PyList_GET_SIZE(logged)) {
            PyObject *all = PySequence_Concat(logged, messages);
            if (all == NULL)
                goto done;
            Py_SETREF(messages, all);
        }
    }
    /* NamespaceGuard.handle */
    if ((now = PyObject_CallMethod(guard, "clock", NULL)) == NULL || PyObject_SetAttrString(guard, "_now", now) < 0)
        goto done;
    if ((items = handle_list(guard, messages, now)) == NULL)
        goto done;
    count = PyList_GET_SIZE(items);
    /* NamespaceGuard.pump: the verdicts, then the conntrack deletes */
    if ((cut = PyObject_GetAttrString(guard, "cut")) == NULL)
        goto done;
    Py_ssize_t ncut = PyObject_Length(cut);
    if (ncut < 0)
        goto done;
    if (count || ncut) {
        PyObject *fresh = PyList_New(0), *joined;
        if (fresh == NULL)
            goto done;
        int rc = PyObject_SetAttrString(guard, "cut", fresh);
        Py_DECREF(fresh);
        if (rc < 0 || (blob = verdict_blob(queue_num, items)) == NULL)
            goto done;
        if (ncut) {
            PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
            joined = empty ? PyObject_CallMethod(empty, "join", "O", cut) : NULL;
            Py_XDECREF(empty);
            if (joined == NULL)
                goto done;
            PyBytes_Concat(&blob, joined);
            Py_DECREF(joined);
            if (blob == NULL)
                goto done;
        }
        const char *p = PyBytes_AS_STRING(blob);
        Py_ssize_t left = PyBytes_GET_SIZE(blob);
        while (left > 0) {
            ssize_t sent;
            Py_BEGIN_ALLOW_THREADS
            sent = send(fd, p, (size_t)(left < SEND_CHUNK ? left : SEND_CHUNK), 0);
            Py_END_ALLOW_THREADS
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                err = errno;
                where = 3;
                break;
            }
            p += sent;
            left -= sent;
        }
    }
answer:
    out = Py_BuildValue("(niii)", count, err, where, overflows);
done:
    Py_XDECREF(messages); Py_XDECREF(logged); Py_XDECREF(now); Py_XDECREF(items); Py_XDECREF(cut);
    Py_XDECREF(blob);
    PyBuffer_Release(&view);
    return out;
}

/*
 * verdict_bytes(queue_num, items): kernel/nfqueue.py's
 * b"".join(verdict_bytes(queue_num, pid, verdict, mark) for pid, verdict,
 * mark in items): one NFQNL_MSG_VERDICT per item, its NFQA_MARK when mark
 * is not None.
 */
static PyObject *verdicts_blob(PyObject *self, PyObject *args)
{
    unsigned queue_num;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "IO", &queue_num, &items))
        return NULL;
    return verdict_blob(queue_num, items);
}

static PyObject *verdict_blob(unsigned queue_num, PyObject *items)
{
    PyObject *seq, *out = NULL;
    if ((seq = PySequence_Fast(items, "verdict_bytes: items must be a sequence")) == NULL)
        return NULL;
    Py_ssize_t i, n = PySequence_Fast_GET_SIZE(seq), size = 0;
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "verdict_bytes: items are (packet_id, verdict, mark)");
            goto done;
        }
        size += PyTuple_GET_ITEM(item, 2) == Py_None ? 32 : 40;
    }
    if ((out = PyBytes_FromStringAndSize(NULL, size)) == NULL)
        goto done;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *mark = PyTuple_GET_ITEM(item, 2);
        unsigned long pid = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 0));
        unsigned long verdict = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 1));
        unsigned long mvalue = mark == Py_None ? 0 : PyLong_AsUnsignedLong(mark);
        if (PyErr_Occurred() || pid > 0xFFFFFFFFul || verdict > 0xFFFFFFFFul || mvalue > 0xFFFFFFFFul) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_OverflowError, "verdict_bytes: a field is wider than 32 bits");
            Py_CLEAR(out);
            goto done;
        }
        uint32_t len = mark == Py_None ? 32 : 40, zero32 = 0, v_be = htonl((uint32_t)verdict),
            pid_be = htonl((uint32_t)pid), m_be = htonl((uint32_t)mvalue);
        uint16_t mtype = (3 << 8) | 1, flags = 1, res_id = htons((uint16_t)queue_num), alen = 12, atype = 2,
            mlen = 8, mattr = 3;
        memcpy(w, &len, 4);
        memcpy(w + 4, &mtype, 2);
        memcpy(w + 6, &flags, 2);
        memcpy(w + 8, &zero32, 4);
        memcpy(w + 12, &zero32, 4);
        w[16] = 0;                  /* AF_UNSPEC */
        w[17] = 0;
        memcpy(w + 18, &res_id, 2);
        memcpy(w + 20, &alen, 2);
        memcpy(w + 22, &atype, 2);
        memcpy(w + 24, &v_be, 4);
        memcpy(w + 28, &pid_be, 4);
        if (mark != Py_None) {
            memcpy(w + 32, &mlen, 2);
            memcpy(w + 34, &mattr, 2);
            memcpy(w + 36, &m_be, 4);
        }
        w += len;
    }
done:
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"configure_messages", configure_messages, METH_VARARGS, "configure_messages(Message, QUEUED, LOGGED)"},
    {"configure_packets", configure_packets, METH_VARARGS, "configure_packets(Packet)"},
    {"parse", parse, METH_VARARGS, "parse(buffer, length=-1) -> (messages, acks), as kernel/nfqueue._parse"},
    {"receive", receive, METH_VARARGS,
     "receive(fd, buffer, limit, overflow_ok=False) -> (messages, errno, overflows), as "
     "kernel/nfqueue.read_datagrams with _parse"},
    {"read_packet", read_packet, METH_VARARGS, "read_packet(data) -> Packet or None, as guard/packet._read"},
    {"configure_guard", configure_guard, METH_VARARGS,
     "configure_guard(Flow, ACCEPT, count_key, NAME, 'tcp', from_bytes, STREAM_CAP, MARK_MASK, MARK_ACCEPTED, "
     "NF_REPEAT)"},
    {"guard_handle", guard_handle, METH_VARARGS,
     "guard_handle(guard, messages, now) -> verdicts, as guard/loop.NamespaceGuard.handle"},
    {"guard_pump", guard_pump, METH_VARARGS,
     "guard_pump(guard, fd, log_fd, buffer, queue_num, queue_limit, log_limit) -> (verdicts, errno, where, "
     "overflows), as "
     "guard/loop.NamespaceGuard.pump on a kernel/nfqueue.QueueSocket"},
    {"verdict_bytes", verdicts_blob, METH_VARARGS,
     "verdict_bytes(queue_num, items) -> bytes, as kernel/nfqueue's join of verdict_bytes"},
    {"hello_name", hello_name, METH_VARARGS,
     "hello_name(data) -> (name bytes, ech) for a one-record ClientHello, or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vmsan_fastpath", "The name guard's per-packet reading in C.", -1, methods,
};

PyMODINIT_FUNC PyInit_vmsan_fastpath(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    dotted_cache = PyDict_New();
    if (dotted_cache == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    /* the version the Python side checks, so a stale build is not used */
    if (PyModule_AddIntConstant(m, "VERSION", 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
