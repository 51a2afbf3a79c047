"""The pin table (resolver/pins.py)."""

from ansible_collections.vmsan.network.plugins.module_utils.resolver.pins import PinTable


def test_pin_names_and_expiry():
    pins = PinTable()
    pins.pin("web", "203.0.113.10", ["alias.test", "a.test"], 100.0)
    pins.pin("web", "203.0.113.10", ["b.test"], 50.0)
    pins.pin("db", "203.0.113.10", ["c.test"], 100.0)
    assert pins.names("web", "203.0.113.10", 10.0) == {"alias.test", "a.test", "b.test"}
    assert pins.names("web", "203.0.113.10", 60.0) == {"alias.test", "a.test"}
    assert pins.names("web", "203.0.113.11", 10.0) == frozenset()
    assert pins.names("other", "203.0.113.10", 10.0) == frozenset()
    assert pins.names("db", "203.0.113.10", 10.0) == {"c.test"}


def test_an_expiry_only_moves_later():
    pins = PinTable()
    pins.pin("web", "x", ["a.test"], 100.0)
    pins.pin("web", "x", ["a.test"], 20.0)
    assert pins.names("web", "x", 50.0) == {"a.test"}
    pins.pin("web", "x", ["a.test"], 200.0)
    assert pins.expire(150.0) == 0
    assert pins.names("web", "x", 150.0) == {"a.test"}
    assert pins.expire(200.0) == 1
    assert pins.addresses("web") == {} and pins.vms() == []


def test_forget_by_name_address_and_vm():
    pins = PinTable()
    pins.pin("web", "x", ["a.test", "b.test"], 100.0)
    pins.pin("web", "y", ["b.test"], 100.0)
    pins.pin("db", "x", ["b.test"], 100.0)
    dropped = pins.forget_names("web", lambda name: name != "b.test")
    assert sorted(dropped) == [("x", "b.test"), ("y", "b.test")]
    assert pins.addresses("web") == {"x": {"a.test": 100.0}}
    pins.forget_address("web", "x")
    assert pins.addresses("web") == {}
    pins.forget_vm("db")
    assert pins.names("db", "x", 0.0) == frozenset()
    assert pins.expire(1000.0) == 0          # the heap's stale entries are skipped


def test_expire_many_and_heap_stays_small():
    pins = PinTable()
    for i in range(1000):
        for _ in range(5):
            pins.pin("web", "10.0.%d.%d" % (i // 256, i % 256), ["n%d.test" % i], float(i + 1))
    assert pins.expire(500.0) == 500
    assert len(pins.addresses("web")) == 500
    assert len(pins._heap) <= 4 * 500 + 64


def test_rebuild_from_the_learned_set():
    pins = PinTable()
    members = [{"address": "x", "timeout": 30, "comment": "A.test."},
               {"address": "y", "timeout": 0, "comment": "b.test"},      # no timeout: not pinned
               {"address": "z", "timeout": 30, "comment": None}]
    assert pins.rebuild("web", members, 100.0) == 1
    assert pins.addresses("web") == {"x": {"a.test": 130.0}}
