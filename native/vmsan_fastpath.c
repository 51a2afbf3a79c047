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
 * receive(fd, buffer, limit): the messages of the datagrams waiting on the
 * non-blocking netfilter socket FD, read into BUFFER (writable), at most
 * LIMIT datagrams, as kernel/nfqueue.read_datagrams reads them with _parse
 * (error acks are not kept): (messages, errno), errno 0 when the socket had
 * no more (or LIMIT was reached), else the error that stopped the reading
 * (ENOBUFS: the socket overflowed; the caller decides). EINTR reads again.
 */
static PyObject *receive(PyObject *self, PyObject *args)
{
    int fd, limit, count, err = 0;
    Py_buffer view;
    PyObject *messages, *out = NULL;
    if (!configured(message_type, "configure_messages") || !PyArg_ParseTuple(args, "iw*i", &fd, &view, &limit))
        return NULL;
    messages = PyList_New(0);
    if (messages == NULL)
        goto done;
    for (count = 0; count < limit; count++) {
        ssize_t n = recv(fd, view.buf, (size_t)view.len, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) {
                count--;
                continue;
            }
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                err = errno;
            break;
        }
        if (parse_into(view.buf, n, messages, NULL) < 0)
            goto done;
    }
    out = Py_BuildValue("(Oi)", messages, err);
done:
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

/* read_packet(data): as guard/packet._read. */
static PyObject *read_packet(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *out = NULL;
    if (!configured(packet_type, "configure_packets") || !PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t n = view.len;
    if (n < 20)
        goto none;
    unsigned ihl = (d[0] & 0x0F) * 4, proto = d[9];
    if (d[0] >> 4 != 4 || ihl < 20 || (be16(d + 6) & 0x1FFF))
        goto none;
    Py_ssize_t total = be16(d + 2), end = total < n ? total : n;
    if (proto == 6) {
        if (end < (Py_ssize_t)ihl + 20)
            goto none;
        const unsigned char *t = d + ihl;
        unsigned off = t[12] >> 4;
        Py_ssize_t start = ihl + off * 4;
        if (off < 5 || start > end)
            goto none;
        PyObject *src = dotted(d + 12), *dst = src ? dotted(d + 16) : NULL;
        if (dst == NULL) {
            Py_XDECREF(src);
            goto done;
        }
        out = make(packet_type, Py_BuildValue("(ININIkkIy#)", proto, src, be16(t), dst, be16(t + 2),
                                              (unsigned long)be32(t + 4), (unsigned long)be32(t + 8), t[13],
                                              (const char *)d + start, end - start));
        goto done;
    }
    if (proto == 17) {
        if (end < (Py_ssize_t)ihl + 8)
            goto none;
        const unsigned char *u = d + ihl;
        PyObject *src = dotted(d + 12), *dst = src ? dotted(d + 16) : NULL;
        if (dst == NULL) {
            Py_XDECREF(src);
            goto done;
        }
        out = make(packet_type, Py_BuildValue("(ININIOOiy#)", proto, src, be16(u), dst, be16(u + 2), Py_None,
                                              Py_None, 0, (const char *)d + ihl + 8, end - ihl - 8));
        goto done;
    }
none:
    Py_INCREF(Py_None);
    out = Py_None;
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

static PyObject *hello_name(PyObject *self, PyObject *args)
{
    Py_buffer view;
    PyObject *out = NULL;
    /* extension types seen: a bitmap of all 65536 */
    uint64_t seen[1024];
    if (!PyArg_ParseTuple(args, "y*", &view))
        return NULL;
    const unsigned char *d = view.buf;
    Py_ssize_t len = view.len;
    if (len < 9 || d[0] != 22 || d[1] != 3 || d[2] > 4 || d[5] != 1)
        goto none;
    Py_ssize_t rlen = be16(d + 3), size = ((Py_ssize_t)d[6] << 16) | (d[7] << 8) | d[8];
    if (rlen <= 0 || rlen > MAX_RECORD || size + 4 != rlen || len < 5 + rlen)
        goto none;
    const unsigned char *b = d + 9;
    Py_ssize_t n = size, p;
    if (n < 35 || b[0] != 3)
        goto none;
    p = 34;
    unsigned sid = b[p];
    p += 1 + sid;
    if (sid > 32 || p + 2 > n)
        goto none;
    unsigned suites = be16(b + p);
    p += 2 + suites;
    if (suites < 2 || suites % 2 || p + 1 > n)
        goto none;
    unsigned methods = b[p];
    p += 1 + methods;
    if (methods < 1 || p > n || p == n)
        goto none;
    if (p + 2 > n || p + 2 + (Py_ssize_t)be16(b + p) != n)
        goto none;
    p += 2;
    memset(seen, 0, sizeof(seen));
    const unsigned char *name = NULL;
    Py_ssize_t name_len = 0;
    int have_sni = 0, ech = 0;
    while (p < n) {
        if (p + 4 > n)
            goto none;
        unsigned etype = be16(b + p), elen = be16(b + p + 2);
        Py_ssize_t start = p + 4;
        p = start + elen;
        if (p > n)
            goto none;
        if (seen[etype >> 6] & ((uint64_t)1 << (etype & 63)))
            goto none;
        seen[etype >> 6] |= (uint64_t)1 << (etype & 63);
        if (etype == 0) {
            const unsigned char *e = b + start;
            Py_ssize_t en = elen, q = 2;
            if (en < 2 || (Py_ssize_t)be16(e) != en - 2)
                goto none;
            while (q < en) {
                if (q + 3 > en)
                    goto none;
                unsigned ntype = e[q], nlen = be16(e + q + 1);
                Py_ssize_t nstart = q + 3;
                q = nstart + nlen;
                if (q > en)
                    goto none;
                if (ntype != 0)
                    continue;
                if (name != NULL)
                    goto none;
                name = e + nstart;
                name_len = nlen;
            }
            if (name == NULL)
                goto none;
            have_sni = 1;
        } else if (etype == 0xFE0D) {
            ech = 1;
        }
    }
    if (!have_sni)
        goto none;
    out = Py_BuildValue("(y#O)", (const char *)name, name_len, ech ? Py_True : Py_False);
    goto done;
none:
    Py_INCREF(Py_None);
    out = Py_None;
done:
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"configure_messages", configure_messages, METH_VARARGS, "configure_messages(Message, QUEUED, LOGGED)"},
    {"configure_packets", configure_packets, METH_VARARGS, "configure_packets(Packet)"},
    {"parse", parse, METH_VARARGS, "parse(buffer, length=-1) -> (messages, acks), as kernel/nfqueue._parse"},
    {"receive", receive, METH_VARARGS,
     "receive(fd, buffer, limit) -> (messages, errno), as kernel/nfqueue.read_datagrams with _parse"},
    {"read_packet", read_packet, METH_VARARGS, "read_packet(data) -> Packet or None, as guard/packet._read"},
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
    if (PyModule_AddIntConstant(m, "VERSION", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
