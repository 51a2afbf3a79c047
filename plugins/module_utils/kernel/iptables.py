"""Apply a firewall plan (see firewall_plan) to the kernel's legacy tables
through python-iptables (libiptc), in the network namespace of the calling
thread.

Each table is read once, compared rule by rule with the plan, changed in
memory, and written back in one commit, so a reader never sees half a policy.
Nothing is committed when nothing differs; the returned change list is what a
check run reports.

python-iptables encodes every rule; the comparison with the kernel and the
writes work on the encoded entry bytes (see iptables_entries for why).
"""

try:
    from .third_party import import_iptc
    iptc = import_iptc()     # without setuptools and subprocesses (third_party.py)
    HAS_IPTC = True
    IPTC_IMPORT_ERROR = None
except Exception as exc:  # pragma: no cover - depends on the target
    HAS_IPTC = False
    IPTC_IMPORT_ERROR = exc

import ctypes
import threading

from . import iptables_entries as entries
from . import iptables_template as template
from ..model.errors import VmsanError
from ..plan.firewall import TABLES

_active = threading.local()


class _ChainOracle(object):
    """Answers python-iptables' question "is NAME a user chain?" (which decides
    whether a target is a jump) from the handle this thread has open, instead
    of the library's process-wide table cache, which belongs to whichever
    namespace first opened it. Our own chains count even before they exist, so
    a check run can encode jumps to chains it would create."""

    @staticmethod
    def is_chain(name):
        if name.startswith(("VMSAN-", "vmsan-")):
            return True
        table = getattr(_active, "table", None)
        return bool(table is not None and table.is_chain(name))


if HAS_IPTC:
    iptc.Rule.tables = property(lambda self: [_ChainOracle])

_BASIC = {"-s": "src", "-d": "dst", "-p": "protocol", "-i": "in_interface", "-o": "out_interface"}


def open_table(name):
    """A fresh libiptc handle bound to this thread's namespace (python-iptables
    caches one handle per table name process-wide, which would point at
    whichever namespace first opened it)."""
    table = object.__new__(iptc.Table)
    table._init(name, False)
    _active.table = table
    return table


class Encoded(object):
    """A rule encoded for libiptc, kept as the bytes it takes (``buf``, a
    ctypes buffer) and the key it is compared by (see iptables_entries.key)."""

    __slots__ = ("tokens", "buf", "key", "comment")

    def __init__(self, tokens, buf):
        self.tokens = tokens
        self.buf = buf              # final_check done; libiptc copies it on every write
        raw = bytes(buf)
        label = entries.target_name(raw)
        standard = label in entries.VERDICTS or _ChainOracle.is_chain(label)
        self.key = entries.key(raw, label, standard)
        self.comment = entries.comment(raw)


_ENCODED = {}
_ENCODED_MAX = 4096
# shape (iptables_template.split) -> [template bytes, verified] or False
_TEMPLATES = {}
_TEMPLATES_MAX = 1024


def encode(tokens):
    """iptables-save tokens -> Encoded, cached: encoding goes through the
    xtables parsers and costs far more than comparing. Rules that name an IP
    set are not cached: the kernel resolves a set name to a per-namespace
    index when the rule is parsed."""
    encoded = _ENCODED.get(tokens)
    if encoded is None:
        encoded = Encoded(tokens, _encode_buffer(tokens))
        if "--match-set" not in tokens:
            if len(_ENCODED) >= _ENCODED_MAX:
                _ENCODED.clear()
            _ENCODED[tokens] = encoded
    return encoded


def _encode_buffer(tokens):
    """The entry bytes of TOKENS: from python-iptables, or written into the
    bytes of an earlier rule of the same shape once a second rule of that
    shape has come out the same both ways (see iptables_template)."""
    parts = template.split(tokens)
    if parts is None:
        return _encode(tokens).rule
    shape, values = parts
    known = _TEMPLATES.get(shape)
    if known is None:
        buf = _encode(tokens).rule
        if len(_TEMPLATES) >= _TEMPLATES_MAX:
            _TEMPLATES.clear()
        _TEMPLATES[shape] = [bytes(buf), False]
        return buf
    if known is False:
        return _encode(tokens).rule
    try:
        patched = template.patch(known[0], shape, values)
    except ValueError:
        patched = None
    if not known[1]:
        buf = _encode(tokens).rule
        if patched is not None and patched == bytes(buf):
            known[1] = True
        else:
            _TEMPLATES[shape] = False
        return buf
    if patched is None:
        return _encode(tokens).rule
    return ctypes.create_string_buffer(patched, len(patched))


def _encode(tokens):
    """Raises on anything it does not understand: a silently dropped match
    would widen a security rule."""
    rule = iptc.Rule()
    current = None
    invert = False
    i = 0
    try:
        while i < len(tokens):
            tok = tokens[i]
            if tok == "!":
                invert = True
                i += 1
                continue
            if tok in _BASIC:
                value = tokens[i + 1]
                setattr(rule, _BASIC[tok], ("!" if invert else "") + value)
                i += 2
            elif tok == "-m":
                current = rule.create_match(tokens[i + 1])
                i += 2
            elif tok == "-j":
                current = rule.create_target(tokens[i + 1])
                i += 2
            elif tok.startswith("--") and current is not None:
                values = []
                i += 1
                while i < len(tokens) and not tokens[i].startswith("-") and tokens[i] != "!":
                    values.append(tokens[i])
                    i += 1
                param = tok[2:]
                if len(values) == 1:
                    current.set_parameter(param, ("!" if invert else "") + values[0])
                else:
                    current.set_parameter(param, (["!"] if invert else []) + values)
                invert = False
                continue
            else:
                raise ValueError("unexpected token %r" % tok)
            invert = False
        rule.final_check()
    except Exception as exc:
        raise VmsanError("cannot encode rule %r: %s" % (" ".join(tokens), exc))
    return rule


def _same(kernel_rules, wanted_rules):
    return (len(kernel_rules) == len(wanted_rules)
            and all(k.key == w.key for k, w in zip(kernel_rules, wanted_rules)))


def _delete_positions(table, chain, positions):
    """Delete the rules at POSITIONS (0-based) of CHAIN, last first so the
    positions before each deleted one stay valid."""
    for position in sorted(positions, reverse=True):
        if table._iptc.iptc_delete_num_entry(chain.encode(), position, table._handle) != 1:
            raise VmsanError("cannot delete rule %d of chain %s: %s" % (position + 1, chain, table.strerror()))


def _encode_owned(rules, check_mode):
    """The rules encoded; None in check mode when a rule names an IP set that
    only the real run creates (the set match cannot be encoded before its set
    exists, and no rule in the kernel can name it yet: the chain differs)."""
    try:
        return [encode(r) for r in rules]
    except VmsanError:
        if check_mode and any("--match-set" in r for r in rules):
            return None
        raise


def _apply_table(table_name, plan, owner, check_mode, changes):
    table = open_table(table_name)
    try:
        dirty = False
        hooks = {c: r for (t, c), r in plan.hooks.items() if t == table_name}
        owned = {c: r for (t, c), r in plan.owned.items() if t == table_name}
        members = {c: r for (t, c), r in plan.members.items() if t == table_name}
        policies = {c: p for (t, c), p in plan.policies.items() if t == table_name}

        # Shared chains must exist before anything jumps to them.
        needed = set(owned) | set(members)
        for rules in hooks.values():
            needed |= {r[-1] for r in rules}
        for chain in sorted(needed):
            if not table.is_chain(chain):
                changes.append("%s: create chain %s" % (table_name, chain))
                dirty = True
                if not check_mode:
                    table.create_chain(chain)

        for chain, rules in owned.items():
            wanted = _encode_owned(rules, check_mode)
            have = entries.read_chain(table, chain) if table.is_chain(chain) else []
            if wanted is None or not _same(have, wanted):
                changes.append("%s: set chain %s (%d rules)" % (table_name, chain, len(rules)))
                dirty = True
                if not check_mode:
                    table.flush_entries(chain)
                    for rule in wanted:
                        table.append_entry(chain, rule.buf)

        for chain, rules in members.items():
            wanted = [encode(r) for r in rules]
            have = entries.read_chain(table, chain) if table.is_chain(chain) else []
            tag = "vmsan:%s" % owner
            mine = [i for i, r in enumerate(have) if r.comment == tag]
            if not _same([have[i] for i in mine], wanted):
                changes.append("%s: set %s's rules in %s" % (table_name, owner, chain))
                dirty = True
                if not check_mode:
                    _delete_positions(table, chain, mine)
                    for rule in wanted:
                        table.append_entry(chain, rule.buf)

        for builtin, rules in hooks.items():
            wanted = [encode(r) for r in rules]
            have = entries.read_chain(table, builtin)
            if not _same(have[:len(wanted)], wanted):
                changes.append("%s: hook %s into %s" % (table_name, ", ".join(r[-1] for r in rules), builtin))
                dirty = True
                if not check_mode:
                    keys = {w.key for w in wanted}
                    _delete_positions(table, builtin, [i for i, r in enumerate(have) if r.key in keys])
                    for rule in reversed(wanted):
                        table.insert_entry(builtin, rule.buf, 0)

        for builtin, policy in policies.items():
            ch = iptc.Chain(table, builtin)
            if ch.get_policy().name != policy:
                changes.append("%s: policy %s %s" % (table_name, builtin, policy))
                dirty = True
                if not check_mode:
                    ch.set_policy(policy)

        if dirty and not check_mode:
            table.commit()
    finally:
        table.close()


def apply(plan, owner, check_mode=False):
    """Make this namespace's tables match PLAN; return the list of changes."""
    changes = []
    for table_name in TABLES:
        _apply_table(table_name, plan, owner, check_mode, changes)
    return changes


def remove_owner(owner, chains, check_mode=False):
    """Delete OWNER's tagged jump rules from shared chains and its own chains
    (``chains``: {(table, chain)}) in this namespace."""
    changes = []
    for table_name in TABLES:
        table = open_table(table_name)
        try:
            dirty = False
            tag = "vmsan:%s" % owner
            for chain_obj in table.chains:
                if not chain_obj.name.startswith("VMSAN-"):
                    continue
                mine = [i for i, r in enumerate(entries.read_chain(table, chain_obj.name)) if r.comment == tag]
                if mine:
                    changes += ["%s: delete %s's rule in %s" % (table_name, owner, chain_obj.name)] * len(mine)
                    dirty = True
                    if not check_mode:
                        _delete_positions(table, chain_obj.name, mine)
            for tbl, chain in sorted(chains):
                if tbl == table_name and table.is_chain(chain):
                    changes.append("%s: delete chain %s" % (table_name, chain))
                    dirty = True
                    if not check_mode:
                        table.flush_entries(chain)
                        table.delete_chain(chain)
            if dirty and not check_mode:
                table.commit()
        finally:
            table.close()
    return changes


def chains_of(owner_prefix):
    """{(table, chain)} of chains whose name starts with OWNER_PREFIX here."""
    found = set()
    for table_name in TABLES:
        table = open_table(table_name)
        try:
            for chain_obj in table.chains:
                if chain_obj.name.startswith(owner_prefix):
                    found.add((table_name, chain_obj.name))
        finally:
            table.close()
    return found


def dump(table_names=TABLES, prefix=("VMSAN-", "vmsan-")):
    """The rules of our chains as the kernel has them: {table: {chain: [dict]}}."""
    import iptc.easy
    result = {}
    for table_name in table_names:
        table = open_table(table_name)
        try:
            for chain_obj in table.chains:
                if chain_obj.name.startswith(prefix):
                    rules = []
                    for rule in chain_obj.rules:
                        data = iptc.easy.decode_iptc_rule(rule)
                        data.pop("counters", None)
                        rules.append(data)
                    result.setdefault(table_name, {})[chain_obj.name] = rules
        finally:
            table.close()
    return result


def remove_shared(check_mode=False):
    """Delete the hooks into built-in chains and every VMSAN-* chain here
    (only when no VM uses them any more)."""
    changes = []
    for table_name in TABLES:
        table = open_table(table_name)
        try:
            dirty = False
            ours = [c for c in table.chains if c.name.startswith("VMSAN-")]
            names = {c.name for c in ours}
            for chain_obj in table.chains:
                if not table.builtin_chain(chain_obj.name):
                    continue
                hooks = [(i, r.label) for i, r in enumerate(entries.read_chain(table, chain_obj.name))
                         if r.standard and r.label in names]
                for _i, label in hooks:
                    changes.append("%s: unhook %s from %s" % (table_name, label, chain_obj.name))
                    dirty = True
                if hooks and not check_mode:
                    _delete_positions(table, chain_obj.name, [i for i, _label in hooks])
            for chain_obj in ours:
                changes.append("%s: delete chain %s" % (table_name, chain_obj.name))
                dirty = True
                if not check_mode:
                    table.flush_entries(chain_obj.name)
            if not check_mode:
                for chain_obj in ours:
                    table.delete_chain(chain_obj.name)
            if dirty and not check_mode:
                table.commit()
        finally:
            table.close()
    return changes
