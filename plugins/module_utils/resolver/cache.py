"""The resolver's caches, bounded in bytes (pure: no I/O, no threads; the
daemon's loop thread is their only user).

* ``AnswerCache``: upstream answers shared by every VM, keyed by name
  (lower case), type and class;
* ``HotCache``: per VM, the finished replies (as dnslib packed them), keyed
  by ``wire.Query.hot_key`` (what the guest is answered depends on, EDNS
  options left out), so that a repeated query costs a dictionary lookup.
  Every VM's hot cache draws on one ``SharedBytes`` as well as on its own
  limit.

Sizes are estimates of what an entry holds in memory (Python objects,
measured with tracemalloc on CPython 3.11, see ``answer_size`` and
``HOT_OVERHEAD``), not of its wire form. When an entry does not fit, the
oldest entries go first (insertion order, constant time each); expired
entries go when they are looked up and at ``expire`` (once a second).
"""

from collections import OrderedDict

ANSWER_OVERHEAD = 500       # an Answer and its lists: ~420 bytes measured
RECORD_COST = 750           # one dnslib RR with its label, rdata and owner key: ~700 bytes measured
HOT_OVERHEAD = 500          # a Rendered, its tuples and the dictionary slot: ~440 bytes measured

DEFAULT_ANSWER_BYTES = 32 << 20
DEFAULT_HOT_BYTES = 32 << 20         # all VMs together
DEFAULT_HOT_BYTES_PER_VM = 1 << 20
TCP_MARK = b"\x80"          # before a hot key of a TCP reply: a query's first flag byte never has QR set


SWEEP_STEP = 2000           # entries looked at per expire_some() call


class _Sweep(object):
    """Expiry a slice at a time: a cache of 50 000 entries is looked at in
    steps of SWEEP_STEP, so no single call holds the loop for long."""

    def _init_sweep(self):
        self._sweep_keys, self._sweep_at = [], 0

    def expire_some(self, now, step=SWEEP_STEP):
        if self._sweep_at >= len(self._sweep_keys):
            self._sweep_keys, self._sweep_at = list(self._entries()), 0
        end = self._sweep_at + step
        for key in self._sweep_keys[self._sweep_at:end]:
            self._expire_key(key, now)
        self._sweep_at = end


def answer_size(answer):
    """Estimated bytes of a core.Answer in memory."""
    return ANSWER_OVERHEAD + RECORD_COST * (len(answer.answers) + len(answer.authority))


class AnswerCache(_Sweep):
    """KEY -> answer (anything with ``expires``), at most MAX_BYTES of them
    by ``size_of``."""

    def __init__(self, max_bytes=DEFAULT_ANSWER_BYTES, size_of=answer_size):
        self.max_bytes, self.size_of = max_bytes, size_of
        self.bytes = 0
        self._items = OrderedDict()     # key -> (answer, size)
        self._init_sweep()

    def _entries(self):
        return self._items

    def _expire_key(self, key, now):
        item = self._items.get(key)
        if item is not None and item[0].expires <= now:
            self._drop(key)

    def __len__(self):
        return len(self._items)

    def get(self, key, now):
        item = self._items.get(key)
        if item is None:
            return None
        if now >= item[0].expires:
            self._drop(key)
            return None
        return item[0]

    def put(self, key, answer, now):
        """Keep ANSWER (if it is still valid at NOW and fits at all)."""
        if answer.expires <= now:
            return False
        size = self.size_of(answer)
        if size > self.max_bytes:
            return False
        if key in self._items:
            self._drop(key)
        while self.bytes + size > self.max_bytes:       # oldest first, O(1) each (expired ones go at expire())
            self._drop(next(iter(self._items)))
        self._items[key] = (answer, size)
        self.bytes += size
        return True

    def expire(self, now):
        for key in [k for k, (a, _s) in self._items.items() if a.expires <= now]:
            self._drop(key)

    def clear(self):
        self._items.clear()
        self.bytes = 0

    def _drop(self, key):
        _answer, size = self._items.pop(key)
        self.bytes -= size


class SharedBytes(object):
    """The bytes every VM's hot cache draws on together."""

    __slots__ = ("limit", "used")

    def __init__(self, limit=DEFAULT_HOT_BYTES):
        self.limit, self.used = limit, 0


def hot_size(key, rendered):
    return HOT_OVERHEAD + len(key) + len(rendered.tail)


class HotCache(_Sweep, OrderedDict):
    """One VM's finished replies: an OrderedDict (``get`` is the daemon's hot
    path) that ``put`` keeps within LIMIT bytes and within what SHARED has
    left; when the shared bytes run out, the VM's own oldest replies make
    room, and with none of its own left the reply is not kept (it is still
    sent). Entries must only be added through ``put``."""

    def __init__(self, shared, limit=DEFAULT_HOT_BYTES_PER_VM):
        OrderedDict.__init__(self)
        self.shared, self.limit, self.bytes = shared, limit, 0
        self._sizes = {}
        self._init_sweep()

    def _entries(self):
        return self._sizes

    def _expire_key(self, key, now):
        rendered = OrderedDict.get(self, key)
        if rendered is not None and rendered.expires <= now:
            self._drop(key)

    def put(self, key, rendered):
        size = hot_size(key, rendered)
        if size > self.limit:
            return False
        if key in self._sizes:
            self._drop(key)
        while self and (self.bytes + size > self.limit or self.shared.used + size > self.shared.limit):
            self._drop(next(iter(self)))
        if self.shared.used + size > self.shared.limit:
            return False
        OrderedDict.__setitem__(self, key, rendered)
        self._sizes[key] = size
        self.bytes += size
        self.shared.used += size
        return True

    def expire(self, now):
        for key in [k for k, r in self.items() if r.expires <= now]:
            self._drop(key)

    def clear(self):
        self.shared.used -= self.bytes
        self.bytes = 0
        self._sizes.clear()
        OrderedDict.clear(self)

    def _drop(self, key):
        OrderedDict.__delitem__(self, key)
        size = self._sizes.pop(key)
        self.bytes -= size
        self.shared.used -= size
