"""Apply a firewall plan (see plan.firewall) to the kernel's legacy tables
through python-iptables (libiptc), in the network namespace of the calling
thread.

Each table is read once (``observe``), compared rule by rule with the plan
(``table_steps``, pure: the decisions are unit-tested without a kernel),
changed in memory and written back in one commit (``_run``), so a reader
never sees half a policy. Nothing is committed when nothing differs; check
mode is the same run without the writes.

python-iptables encodes every rule; the comparison with the kernel and the
writes work on the encoded entry bytes (see iptables_entries for why). What
this takes from python-iptables beyond its public API is in iptc_compat.
"""

import ctypes
from collections import namedtuple
from contextlib import contextmanager

from . import iptables_entries as entries
from . import iptables_template as template
from . import iptc_compat
from ..model import changes as C
from ..model.changes import Change
from ..model.errors import VmsanError
from ..plan.firewall import TABLES

_BASIC = {"-s": "src", "-d": "dst", "-p": "protocol", "-i": "in_interface", "-o": "out_interface"}


def open_table(name):
    """A fresh handle of table NAME bound to this thread's namespace (see
    iptc_compat.open_table); close it."""
    return iptc_compat.open_table(name)


@contextmanager
def _table(name, doing):
    """A fresh handle of table NAME; libiptc's errors become KernelErrors
    that say what was being done."""
    table = iptc_compat.open_table(name)
    try:
        yield table
    except iptc_compat.LIBRARY_ERRORS as exc:
        raise iptc_compat.translated(exc, "%s (table %s)" % (doing, name))
    finally:
        iptc_compat.close_table(table)


class Encoded(object):
    """A rule encoded for libiptc, kept as the bytes it takes (``buf``, a
    ctypes buffer) and the key it is compared by (see iptables_entries.key)."""

    __slots__ = ("tokens", "buf", "key", "comment")

    def __init__(self, tokens, buf):
        self.tokens = tokens
        self.buf = buf              # final_check done; libiptc copies it on every write
        raw = bytes(buf)
        label = entries.target_name(raw)
        standard = label in entries.VERDICTS or iptc_compat.ChainOracle.is_chain(label)
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
    iptc_compat.require()
    rule = iptc_compat.iptc.Rule()
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
        iptc_compat.delete_entry(table, chain, position)


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


# One step of a table's change: the Change reported, and what _run does.
# action: create_chain, set_chain (rules), set_members / hook (positions to
# delete, rules), policy (the policy's name).
Step = namedtuple("Step", "change action chain delete rules policy")


def _step(change, action, chain, delete=(), rules=(), policy=None):
    return Step(change, action, chain, tuple(delete), tuple(rules), policy)


TablePlan = namedtuple("TablePlan", "hooks owned members policies absent", defaults=(frozenset(),))
# the part of a firewall plan for one table: {chain: rules} each, {builtin: policy},
# {chain} that must not exist


def _for_table(plan, table_name):
    def pick(group):
        return {c: r for (t, c), r in group.items() if t == table_name}
    absent = frozenset(c for t, c in plan.absent if t == table_name)
    return TablePlan(pick(plan.hooks), pick(plan.owned), pick(plan.members), pick(plan.policies), absent)


def chains_needed(part):
    """The chains a table's plan writes into or jumps to."""
    needed = set(part.owned) | set(part.members)
    for rules in part.hooks.values():
        needed |= {r[-1] for r in rules}
    return needed


Observed = namedtuple("Observed", "chains policies")
# chains: {chain: [KernelRule] or None (no such chain)}; policies: {builtin: policy}


def observe(table, part):
    """What the kernel's TABLE has of the chains PART (a TablePlan) names:
    the rules of those it compares, the existence of those it only jumps to
    (an existing chain whose rules were not read is an empty list)."""
    compared = set(part.owned) | set(part.members) | set(part.hooks)
    chains = {}
    for chain in sorted(chains_needed(part) | compared | part.absent):
        if not table.is_chain(chain):
            chains[chain] = None
        else:
            chains[chain] = entries.read_chain(table, chain) if chain in compared else []
    policies = {b: iptc_compat.iptc.Chain(table, b).get_policy().name for b in part.policies}
    return Observed(chains, policies)


def table_steps(table_name, part, owner, have, wanted):
    """The steps that turn HAVE (``observe``) into PART (a TablePlan), in the
    order they run: chains first (a jump needs its target), then owned
    chains, the owner's members of shared chains, hooks, policies, and last
    the chains that must not exist (the rules written before no longer jump
    to them). WANTED:
    {chain: [encoded rules] or None (cannot be encoded yet: differs)} for
    every chain PART names. Pure."""
    steps = []
    for chain in sorted(chains_needed(part)):
        if have.chains.get(chain) is None:
            steps.append(_step(Change(C.CREATE_CHAIN, chain, (table_name,)), "create_chain", chain))
    for chain, rules in part.owned.items():
        want = wanted[chain]
        if want is None or not _same(have.chains.get(chain) or [], want):
            steps.append(_step(Change(C.SET_CHAIN, chain, (table_name, len(rules))), "set_chain", chain,
                               rules=want or ()))
    tag = "vmsan:%s" % owner
    for chain in part.members:
        want, current = wanted[chain], have.chains.get(chain) or []
        mine = [i for i, r in enumerate(current) if r.comment == tag]
        if not _same([current[i] for i in mine], want):
            steps.append(_step(Change(C.SET_MEMBERS, chain, (table_name, owner)), "set_members", chain, mine, want))
    for builtin, rules in part.hooks.items():
        want, current = wanted[builtin], have.chains.get(builtin) or []
        if not _same(current[:len(want)], want):
            keys = {w.key for w in want}
            steps.append(_step(Change(C.HOOK, builtin, (table_name, ", ".join(r[-1] for r in rules))), "hook",
                               builtin, [i for i, r in enumerate(current) if r.key in keys], want))
    for builtin, policy in part.policies.items():
        if have.policies.get(builtin) != policy:
            steps.append(_step(Change(C.CHAIN_POLICY, builtin, (table_name, policy)), "policy", builtin,
                               policy=policy))
    for chain in sorted(part.absent):
        if have.chains.get(chain) is not None:
            steps.append(_step(Change(C.DELETE_CHAIN, chain, (table_name,)), "delete_chain", chain))
    return steps


def _run(table, steps):
    """Make STEPS in TABLE's handle and commit them (one commit)."""
    for step in steps:
        if step.action == "create_chain":
            table.create_chain(step.chain)
        elif step.action == "set_chain":
            table.flush_entries(step.chain)
            for rule in step.rules:
                table.append_entry(step.chain, rule.buf)
        elif step.action == "set_members":
            _delete_positions(table, step.chain, step.delete)
            for rule in step.rules:
                table.append_entry(step.chain, rule.buf)
        elif step.action == "hook":
            _delete_positions(table, step.chain, step.delete)
            for rule in reversed(step.rules):
                table.insert_entry(step.chain, rule.buf, 0)
        elif step.action == "policy":
            iptc_compat.iptc.Chain(table, step.chain).set_policy(step.policy)
    doomed = [step.chain for step in steps if step.action == "delete_chain"]
    for chain in doomed:            # all flushed first: one may jump to another
        table.flush_entries(chain)
    for chain in doomed:
        table.delete_chain(chain)
    if steps:
        table.commit()


def _wanted(part, check_mode):
    wanted = {c: _encode_owned(r, check_mode) for c, r in part.owned.items()}
    wanted.update({c: [encode(r) for r in rules] for group in (part.members, part.hooks)
                   for c, rules in group.items()})
    return wanted


def apply(plan, owner, check_mode=False):
    """Make this namespace's tables match PLAN; return the Changes (made,
    or in check mode to be made)."""
    changes = []
    for table_name in TABLES:
        part = _for_table(plan, table_name)
        if not (part.hooks or part.owned or part.members or part.policies or part.absent):
            continue
        with _table(table_name, "apply the rules of %s" % owner) as table:
            steps = table_steps(table_name, part, owner, observe(table, part), _wanted(part, check_mode))
            if not check_mode:
                _run(table, steps)
        changes += [s.change for s in steps]
    return changes


def remove_owner(owner, chains, check_mode=False):
    """Delete OWNER's tagged jump rules from shared chains and its own chains
    (CHAINS: names, looked for in every table) in this namespace."""
    changes = []
    tag = "vmsan:%s" % owner
    for table_name in TABLES:
        with _table(table_name, "remove the rules of %s" % owner) as table:
            dirty = False
            for chain_obj in table.chains:
                if not chain_obj.name.startswith("VMSAN-"):
                    continue
                mine = [i for i, r in enumerate(entries.read_chain(table, chain_obj.name)) if r.comment == tag]
                if mine:
                    changes += [Change(C.DELETE_MEMBER, chain_obj.name, (table_name, owner))] * len(mine)
                    dirty = True
                    if not check_mode:
                        _delete_positions(table, chain_obj.name, mine)
            present = [chain for chain in sorted(chains) if table.is_chain(chain)]
            for chain in present:
                changes.append(Change(C.DELETE_CHAIN, chain, (table_name,)))
                dirty = True
            if present and not check_mode:
                # all flushed before any is deleted: one may jump to another
                # (the out chain to the cap and guard chains)
                for chain in present:
                    table.flush_entries(chain)
                for chain in present:
                    table.delete_chain(chain)
            if dirty and not check_mode:
                table.commit()
    return changes


def delete_chain(table_name, chain, check_mode=False):
    """Delete CHAIN (no rule may jump to it any more) from TABLE_NAME here;
    whether it existed."""
    with _table(table_name, "delete chain %s" % chain) as table:
        if not table.is_chain(chain):
            return False
        if not check_mode:
            table.flush_entries(chain)
            table.delete_chain(chain)
            table.commit()
    return True


def existing_chains(names):
    """{(table, chain)} of the chains among NAMES that exist here (exact
    names: VM ids may contain '-', so a prefix would also match the chains
    of a VM whose id extends another's)."""
    found = set()
    for table_name in TABLES:
        with _table(table_name, "list chains") as table:
            found |= {(table_name, name) for name in names if table.is_chain(name)}
    return found


def read_chains(table_name, names):
    """{chain: [KernelRule]} of the chains among NAMES that exist in table
    TABLE_NAME here, with the kernel's counters: one read of the table (the
    kernel copies every entry and its counters), no decoding."""
    with _table(table_name, "read the counters") as table:
        return {name: entries.read_chain(table, name) for name in names if table.is_chain(name)}


def dump(table_names=TABLES, prefix=("VMSAN-", "vmsan-")):
    """The rules of our chains as the kernel has them: {table: {chain: [dict]}}."""
    import iptc.easy    # only `vmsan show` decodes rules back to text
    result = {}
    for table_name in table_names:
        with _table(table_name, "read the rules") as table:
            for chain_obj in table.chains:
                if chain_obj.name.startswith(prefix):
                    rules = []
                    for rule in chain_obj.rules:
                        data = iptc.easy.decode_iptc_rule(rule)
                        data.pop("counters", None)
                        rules.append(data)
                    result.setdefault(table_name, {})[chain_obj.name] = rules
    return result


def remove_shared(check_mode=False):
    """Delete the hooks into built-in chains and every VMSAN-* chain here
    (only when no VM uses them any more)."""
    changes = []
    for table_name in TABLES:
        with _table(table_name, "remove the shared chains") as table:
            dirty = False
            ours = [c for c in table.chains if c.name.startswith("VMSAN-")]
            names = {c.name for c in ours}
            for chain_obj in table.chains:
                if not table.builtin_chain(chain_obj.name):
                    continue
                hooks = [(i, r.label) for i, r in enumerate(entries.read_chain(table, chain_obj.name))
                         if r.standard and r.label in names]
                for _i, label in hooks:
                    changes.append(Change(C.UNHOOK, chain_obj.name, (table_name, label)))
                    dirty = True
                if hooks and not check_mode:
                    _delete_positions(table, chain_obj.name, [i for i, _label in hooks])
            for chain_obj in ours:
                changes.append(Change(C.DELETE_CHAIN, chain_obj.name, (table_name,)))
                dirty = True
                if not check_mode:
                    table.flush_entries(chain_obj.name)
            if not check_mode:
                for chain_obj in ours:
                    table.delete_chain(chain_obj.name)
            if dirty and not check_mode:
                table.commit()
    return changes
