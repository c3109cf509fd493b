"""
What each command does to the store and what it replies, with Redis 7.0's
reply types and error wording.

This module owns the command table (name, arity, handler), argument parsing,
and the error replies. It knows the reply types of
L{txstateproto.protocols.resp} but not how replies are encoded or written,
nor connections, states or clocks: a handler gets the L{Store}, the
connection's L{Session}, the arguments and the time now in milliseconds, and
returns a reply value for L{txstateproto.protocols.resp.encode_reply} (or
raises L{CommandError}). Connection control (C{MULTI}, C{EXEC}, C{DISCARD},
C{QUIT}) has no handler here: the server's states run it.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
from collections import deque
from collections.abc import Callable
from typing import Final, final

import attrs

from examples.kvstore.store import Store
from txstateproto.protocols.resp import NULL_ARRAY, ErrorReply, SimpleString

__all__ = [
    "COMMANDS",
    "OK",
    "PONG",
    "QUEUED",
    "Command",
    "CommandError",
    "Session",
    "arity_error",
    "arity_error_message",
    "lookup",
    "run",
    "unknown_command",
]

#: The C{+OK} reply.
OK: Final = SimpleString(b"OK")
#: The C{+QUEUED} reply to a command queued in a transaction.
QUEUED: Final = SimpleString(b"QUEUED")
#: The C{+PONG} reply to a C{PING} without a message.
PONG: Final = SimpleString(b"PONG")

_WRONGTYPE: Final = "WRONGTYPE Operation against a key holding the wrong kind of value"
_NOT_INTEGER: Final = "ERR value is not an integer or out of range"
_NOT_POSITIVE: Final = "ERR value is out of range, must be positive"
_SYNTAX: Final = "ERR syntax error"

_LLONG_MIN: Final = -(2**63)
_LLONG_MAX: Final = 2**63 - 1

#: The version HELLO reports; what the wording above follows.
SERVER_VERSION: Final = "7.0.0"

_client_ids = itertools.count(1)


class CommandError(Exception):
    """
    A command cannot be carried out; the client gets C{-<message>}.

    Raised by handlers and caught by L{run}, which turns it into an
    L{ErrorReply}. It never reaches the connection: the client may go on.

    @ivar message: The error code and text, as Redis words it (C{"ERR
        syntax error"}, C{"WRONGTYPE ..."}).
    """

    def __init__(self, message: str) -> None:
        """
        @param message: The error code and text.
        """
        self.message = message
        super().__init__(message)


@attrs.define(slots=True)
class Session:
    """
    What one connection has negotiated.

    @ivar protocol: The RESP version replies are encoded in: 2 until the
        client sends C{HELLO 3}.
    @ivar name: The name given by C{CLIENT SETNAME} or C{HELLO ... SETNAME},
        or C{None}.
    @ivar id: A number unique in this process, as C{CLIENT ID} reports.
    """

    protocol: int = 2
    name: bytes | None = None
    id: int = attrs.field(factory=lambda: next(_client_ids))


#: What a handler is called with: the store, the session, the arguments
#: (the command name first) and the time now in milliseconds.
Handler = Callable[[Store, Session, list[bytes], int], object]


@final
@attrs.frozen
class Command:
    """
    One entry of the command table.

    @ivar name: The lower-case name, as Redis's error messages give it.
    @ivar arity: Redis's arity: C{n > 0} takes exactly C{n} arguments
        counting the name, C{n < 0} at least C{-n}.
    @ivar handler: What carries it out, or C{None} for the connection
        control commands that the server's states run themselves.
    """

    name: str
    arity: int
    handler: Handler | None


#### Argument parsing


def _int(value: bytes, error: str = _NOT_INTEGER) -> int:
    """
    Parse a signed 64-bit integer the way Redis's C{string2ll} does.

    @param value: The argument.
    @param error: The error message if it is not one.
    @return: The integer.
    @raise CommandError: If it is not a canonical decimal integer in range
        (no C{+}, blanks or leading zeros).
    """
    body = value[1:] if value[:1] == b"-" else value
    if not body.isdigit() or len(body) > 19 or (body[0] == 0x30 and value != b"0"):
        raise CommandError(error)
    number = int(value)
    if number < _LLONG_MIN or number > _LLONG_MAX:
        raise CommandError(error)
    return number


def _positive_count(value: bytes) -> int:
    """
    Parse a non-negative count (LPOP's, SPOP's).

    @param value: The argument.
    @return: The count.
    @raise CommandError: If it is not an integer, or is negative.
    """
    count = _int(value, _NOT_POSITIVE)
    if count < 0:
        raise CommandError(_NOT_POSITIVE)
    return count


#### Typed access


def _string(store: Store, key: bytes) -> bytes | None:
    """
    The string at C{key}, or C{None} if there is none.

    @raise CommandError: C{WRONGTYPE} if C{key} holds something else.
    """
    value = store.data.get(key)
    if value is None or type(value) is bytes:
        return value
    raise CommandError(_WRONGTYPE)


def _list(store: Store, key: bytes) -> deque[bytes] | None:
    """
    The list at C{key}, or C{None}.

    @raise CommandError: C{WRONGTYPE} if C{key} holds something else.
    """
    value = store.data.get(key)
    if value is None or type(value) is deque:
        return value
    raise CommandError(_WRONGTYPE)


def _set(store: Store, key: bytes) -> set[bytes] | None:
    """
    The set at C{key}, or C{None}.

    @raise CommandError: C{WRONGTYPE} if C{key} holds something else.
    """
    value = store.data.get(key)
    if value is None or type(value) is set:
        return value
    raise CommandError(_WRONGTYPE)


def _hash(store: Store, key: bytes) -> dict[bytes, bytes] | None:
    """
    The hash at C{key}, or C{None}.

    @raise CommandError: C{WRONGTYPE} if C{key} holds something else.
    """
    value = store.data.get(key)
    if value is None or type(value) is dict:
        return value
    raise CommandError(_WRONGTYPE)


#### Connection and server


def _ping(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """PING [message]: C{+PONG}, or the message as a bulk string."""
    if len(args) > 2:
        raise CommandError(arity_error_message("ping"))
    return args[1] if len(args) == 2 else PONG


def _echo(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """ECHO message."""
    return args[1]


def _select(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SELECT index: only database 0 exists."""
    if _int(args[1]) != 0:
        raise CommandError("ERR DB index is out of range")
    return OK


def _dbsize(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """DBSIZE: the number of live keys."""
    return len(store)


def _flush(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """FLUSHDB / FLUSHALL [ASYNC|SYNC]."""
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(_SYNTAX)
    store.flush()
    return OK


def _hello(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """
    HELLO [protover [AUTH user pass] [SETNAME name]]: switch the connection's
    RESP version and describe the server (a map; a flat array in RESP2).
    """
    protocol = session.protocol
    name = session.name
    if len(args) > 1:
        try:
            protocol = _int(args[1])
        except CommandError:
            raise CommandError(
                "ERR Protocol version is not an integer or out of range"
            ) from None
        i = 2
        while i < len(args):
            option = args[i].upper()
            more = len(args) - i - 1
            if option == b"AUTH" and more >= 2:
                # No passwords here: like a Redis whose default user has
                # nopass, any credentials are accepted.
                i += 3
            elif option == b"SETNAME" and more >= 1:
                name = args[i + 1]
                i += 2
            else:
                raise CommandError(
                    f"ERR Syntax error in HELLO option '{_text(args[i])}'"
                )
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    session.protocol = protocol
    session.name = name
    return {
        "server": "redis",
        "version": SERVER_VERSION,
        "proto": protocol,
        "id": session.id,
        "mode": "standalone",
        "role": "master",
        "modules": [],
    }


def _client(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """CLIENT SETNAME | SETINFO | GETNAME | ID."""
    sub = args[1].lower()
    if sub == b"setname":
        _sub_arity(args, 3, "client|setname")
        if b" " in args[2] or b"\n" in args[2]:
            raise CommandError(
                "ERR Client names cannot contain spaces, newlines or special "
                "characters."
            )
        session.name = args[2] or None
        return OK
    if sub == b"setinfo":
        _sub_arity(args, 4, "client|setinfo")
        return OK
    if sub == b"getname":
        _sub_arity(args, 2, "client|getname")
        return session.name
    if sub == b"id":
        _sub_arity(args, 2, "client|id")
        return session.id
    raise CommandError(_unknown_subcommand(args[1], "CLIENT"))


#: What CONFIG GET reports: what redis-benchmark asks at start.
_CONFIG: Final = {b"save": b"", b"appendonly": b"no"}


def _config(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """CONFIG GET pattern [pattern ...]: a map of matching parameters."""
    if args[1].lower() != b"get":
        raise CommandError(_unknown_subcommand(args[1], "CONFIG"))
    _sub_arity(args, -3, "config|get")
    found: dict[bytes, bytes] = {}
    for pattern in args[2:]:
        for name, value in _CONFIG.items():
            if fnmatch.fnmatchcase(name.decode(), pattern.lower().decode("latin-1")):
                found[name] = value
    return found


def _command(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """COMMAND, COMMAND DOCS, COMMAND COUNT: no command documentation."""
    if len(args) == 1:
        return []
    sub = args[1].lower()
    if sub == b"docs":
        return {}
    if sub == b"count":
        _sub_arity(args, 2, "command|count")
        return len(COMMANDS)
    raise CommandError(_unknown_subcommand(args[1], "COMMAND"))


#### Strings and counters


def _set_command(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SET key value [NX|XX] [GET] [EX s|PX ms|KEEPTTL]."""
    key = args[1]
    if len(args) == 3:
        # The common case: no options.
        # SET overwrites a value of any type.
        store.replace(key, args[2])
        return OK
    condition = b""
    get = keep_ttl = False
    ttl_ms: int | None = None
    i = 3
    while i < len(args):
        option = args[i].upper()
        more = i + 1 < len(args)
        if option in (b"NX", b"XX") and not condition:
            condition = option
        elif option == b"GET" and not get:
            get = True
        elif option == b"KEEPTTL" and ttl_ms is None and not keep_ttl:
            keep_ttl = True
        elif option in (b"EX", b"PX") and more and ttl_ms is None and not keep_ttl:
            i += 1
            amount = _int(args[i])
            if amount <= 0 or (option == b"EX" and amount > _LLONG_MAX // 1000):
                raise CommandError("ERR invalid expire time in 'set' command")
            ttl_ms = amount * 1000 if option == b"EX" else amount
        else:
            raise CommandError(_SYNTAX)
        i += 1
    old = _string(store, key) if get else store.data.get(key)
    exists = old is not None
    if (condition == b"NX" and exists) or (condition == b"XX" and not exists):
        return old if get else None
    if keep_ttl:
        store.data[key] = args[2]
    else:
        store.replace(key, args[2])
    if ttl_ms is not None:
        store.set_deadline(key, now + ttl_ms)
    return old if get else OK


def _get(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """GET key."""
    value = store.data.get(args[1])
    if value is None or type(value) is bytes:
        return value
    raise CommandError(_WRONGTYPE)


def _getset(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """GETSET key value: the old string; the TTL is dropped."""
    old = _string(store, args[1])
    store.replace(args[1], args[2])
    return old


def _del(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """DEL key [key ...]: how many existed."""
    return sum(store.delete(key) for key in args[1:])


def _exists(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """EXISTS key [key ...]: how many exist (a key named twice counts twice)."""
    data = store.data
    return sum(key in data for key in args[1:])


def _incr_by(store: Store, key: bytes, increment: int) -> int:
    """
    Add C{increment} to the integer at C{key}, keeping its TTL.

    @raise CommandError: If the value is not an integer, or the sum
        overflows 64 bits.
    """
    old = _string(store, key)
    value = 0 if old is None else _int(old)
    result = value + increment
    if result < _LLONG_MIN or result > _LLONG_MAX:
        raise CommandError("ERR increment or decrement would overflow")
    store.data[key] = b"%d" % result
    return result


def _incr(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """INCR key."""
    return _incr_by(store, args[1], 1)


def _decr(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """DECR key."""
    return _incr_by(store, args[1], -1)


def _incrby(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """INCRBY key increment."""
    return _incr_by(store, args[1], _int(args[2]))


def _decrby(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """DECRBY key decrement."""
    decrement = _int(args[2])
    if decrement == _LLONG_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr_by(store, args[1], -decrement)


def _mset(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """MSET key value [key value ...]."""
    if len(args) % 2 == 0:
        raise CommandError(arity_error_message("mset"))
    for i in range(1, len(args), 2):
        store.replace(args[i], args[i + 1])
    return OK


def _mget(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """MGET key [key ...]: values, C{None} for missing keys and non-strings."""
    data = store.data
    values: list[object] = []
    for key in args[1:]:
        value = data.get(key)
        values.append(value if type(value) is bytes else None)
    return values


#### Expiry


def _expire_generic(
    store: Store, args: list[bytes], now: int, unit_ms: int, name: str
) -> int:
    """
    EXPIRE / PEXPIRE key amount [NX|XX|GT|LT]: 1 if the deadline was set.

    A deadline not in the future deletes the key at once, as Redis does.
    """
    key = args[1]
    amount = _int(args[2])
    flags = {arg.upper() for arg in args[3:]}
    if not flags <= {b"NX", b"XX", b"GT", b"LT"} or len(flags) != len(args) - 3:
        raise CommandError(f"ERR Unsupported option {_text(args[3])}")
    if b"NX" in flags and len(flags) > 1:
        raise CommandError(
            "ERR NX and XX, GT or LT options at the same time are not compatible"
        )
    if b"GT" in flags and b"LT" in flags:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    if abs(amount) > _LLONG_MAX // unit_ms or now + amount * unit_ms > _LLONG_MAX:
        raise CommandError(f"ERR invalid expire time in '{name}' command")
    if key not in store.data:
        return 0
    deadline = now + amount * unit_ms
    current = store.expires.get(key)
    if (
        (b"NX" in flags and current is not None)
        or (b"XX" in flags and current is None)
        # No deadline counts as an infinite one.
        or (b"GT" in flags and (current is None or deadline <= current))
        or (b"LT" in flags and current is not None and deadline >= current)
    ):
        return 0
    if deadline <= now:
        store.delete(key)
    else:
        store.set_deadline(key, deadline)
    return 1


def _expire(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """EXPIRE key seconds [NX|XX|GT|LT]."""
    return _expire_generic(store, args, now, 1000, "expire")


def _pexpire(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """PEXPIRE key milliseconds [NX|XX|GT|LT]."""
    return _expire_generic(store, args, now, 1, "pexpire")


def _pttl_of(store: Store, key: bytes, now: int) -> int:
    """
    Milliseconds left: -2 if there is no key, -1 if it does not expire.
    """
    if key not in store.data:
        return -2
    deadline = store.expires.get(key)
    return -1 if deadline is None else max(deadline - now, 0)


def _ttl(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """TTL key: seconds left, rounded as Redis rounds them."""
    left = _pttl_of(store, args[1], now)
    return left if left < 0 else (left + 500) // 1000


def _pttl(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """PTTL key: milliseconds left."""
    return _pttl_of(store, args[1], now)


def _persist(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """PERSIST key: 1 if a deadline was removed."""
    return int(args[1] in store.data and store.persist(args[1]))


#### Lists


def _push(store: Store, args: list[bytes], left: bool) -> int:
    """
    LPUSH / RPUSH key element [element ...]: the list's new length.
    """
    key = args[1]
    items = _list(store, key)
    if items is None:
        items = deque()
        store.data[key] = items
    if left:
        items.extendleft(args[2:])
    else:
        items.extend(args[2:])
    return len(items)


def _lpush(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """LPUSH key element [element ...]."""
    return _push(store, args, True)


def _rpush(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """RPUSH key element [element ...]."""
    return _push(store, args, False)


def _pop(store: Store, args: list[bytes], left: bool, name: str) -> object:
    """
    LPOP / RPOP key [count]: an element (C{None} if none), or with a count
    a list of them (the null array if there is no key).
    """
    if len(args) > 3:
        raise CommandError(arity_error_message(name))
    count = _positive_count(args[2]) if len(args) == 3 else None
    items = _list(store, args[1])
    if items is None:
        return None if count is None else NULL_ARRAY
    pop = items.popleft if left else items.pop
    if count is None:
        popped: object = pop()
    else:
        popped = [pop() for _ in range(min(count, len(items)))]
    if not items:
        store.delete(args[1])
    return popped


def _lpop(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """LPOP key [count]."""
    return _pop(store, args, True, "lpop")


def _rpop(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """RPOP key [count]."""
    return _pop(store, args, False, "rpop")


def _llen(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """LLEN key."""
    items = _list(store, args[1])
    return 0 if items is None else len(items)


def _lrange(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """LRANGE key start stop: negative indexes count from the end."""
    start = _int(args[2])
    stop = _int(args[3])
    items = _list(store, args[1])
    if items is None:
        return []
    length = len(items)
    if start < 0:
        start = max(length + start, 0)
    if stop < 0:
        stop += length
    stop = min(stop, length - 1)
    if start > stop:
        return []
    return list(itertools.islice(items, start, stop + 1))


#### Sets


def _sadd(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SADD key member [member ...]: how many were new."""
    members = _set(store, args[1])
    if members is None:
        members = set()
        store.data[args[1]] = members
    before = len(members)
    members.update(args[2:])
    return len(members) - before


def _srem(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SREM key member [member ...]: how many were removed."""
    members = _set(store, args[1])
    if members is None:
        return 0
    before = len(members)
    members.difference_update(args[2:])
    if not members:
        store.delete(args[1])
    return before - len(members)


def _scard(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SCARD key."""
    members = _set(store, args[1])
    return 0 if members is None else len(members)


def _sismember(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SISMEMBER key member: 1 or 0."""
    members = _set(store, args[1])
    return int(members is not None and args[2] in members)


def _spop(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """SPOP key [count]: a random member (C{None} if none), or a set of them."""
    if len(args) > 3:
        raise CommandError(_SYNTAX)
    count = _positive_count(args[2]) if len(args) == 3 else None
    members = _set(store, args[1])
    if members is None:
        return None if count is None else set()
    if count is None:
        popped: object = members.pop()
    elif count >= len(members):
        popped = set(members)
        members.clear()
    else:
        chosen = set(random.sample(sorted(members), count))
        members.difference_update(chosen)
        popped = chosen
    if not members:
        store.delete(args[1])
    return popped


#### Hashes


def _hset(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """HSET key field value [field value ...]: how many fields were new."""
    if len(args) % 2:
        raise CommandError(arity_error_message("hset"))
    fields = _hash(store, args[1])
    if fields is None:
        fields = {}
        store.data[args[1]] = fields
    before = len(fields)
    for i in range(2, len(args), 2):
        fields[args[i]] = args[i + 1]
    return len(fields) - before


def _hget(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """HGET key field."""
    fields = _hash(store, args[1])
    return None if fields is None else fields.get(args[2])


def _hdel(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """HDEL key field [field ...]: how many were removed."""
    fields = _hash(store, args[1])
    if fields is None:
        return 0
    removed = sum(fields.pop(field, None) is not None for field in args[2:])
    if not fields:
        store.delete(args[1])
    return removed


def _hgetall(store: Store, session: Session, args: list[bytes], now: int) -> object:
    """HGETALL key: a map (a flat array of fields and values in RESP2)."""
    fields = _hash(store, args[1])
    return {} if fields is None else dict(fields)


#### The table and the dispatcher


def _table() -> dict[bytes, Command]:
    """
    Build the command table, keyed by both lower- and upper-case names (the
    names clients send), other spellings being found by L{lookup}.
    """
    entries: list[tuple[str, int, Handler | None]] = [
        ("ping", -1, _ping),
        ("echo", 2, _echo),
        ("quit", -1, None),
        ("select", 2, _select),
        ("dbsize", 1, _dbsize),
        ("flushdb", -1, _flush),
        ("flushall", -1, _flush),
        ("hello", -1, _hello),
        ("client", -2, _client),
        ("config", -2, _config),
        ("command", -1, _command),
        ("multi", 1, None),
        ("exec", 1, None),
        ("discard", 1, None),
        ("set", -3, _set_command),
        ("get", 2, _get),
        ("getset", 3, _getset),
        ("del", -2, _del),
        ("exists", -2, _exists),
        ("incr", 2, _incr),
        ("incrby", 3, _incrby),
        ("decr", 2, _decr),
        ("decrby", 3, _decrby),
        ("mset", -3, _mset),
        ("mget", -2, _mget),
        ("expire", -3, _expire),
        ("pexpire", -3, _pexpire),
        ("ttl", 2, _ttl),
        ("pttl", 2, _pttl),
        ("persist", 2, _persist),
        ("lpush", -3, _lpush),
        ("rpush", -3, _rpush),
        ("lpop", -2, _lpop),
        ("rpop", -2, _rpop),
        ("llen", 2, _llen),
        ("lrange", 4, _lrange),
        ("sadd", -3, _sadd),
        ("srem", -3, _srem),
        ("scard", 2, _scard),
        ("sismember", 3, _sismember),
        ("spop", -2, _spop),
        ("hset", -4, _hset),
        ("hget", 3, _hget),
        ("hdel", -3, _hdel),
        ("hgetall", 2, _hgetall),
    ]
    table: dict[bytes, Command] = {}
    for name, arity, handler in entries:
        command = Command(name, arity, handler)
        table[name.encode()] = command
        table[name.upper().encode()] = command
    return table


#: Every command, by lower- and upper-case name.
COMMANDS: Final = _table()


def lookup(name: bytes) -> Command | None:
    """
    Find a command by name, in any case.

    @param name: The name as the client sent it.
    @return: The command, or C{None} if there is none of that name.
    """
    command = COMMANDS.get(name)
    if command is None:
        command = COMMANDS.get(name.lower())
    return command


def arity_error_message(name: str) -> str:
    """
    Redis's message for a wrong argument count.

    @param name: The lower-case command name (C{"config|get"} for a
        subcommand).
    @return: C{"ERR wrong number of arguments for '<name>' command"}.
    """
    return f"ERR wrong number of arguments for '{name}' command"


def arity_error(command: Command, args: list[bytes]) -> ErrorReply | None:
    """
    Check the argument count against the command's arity.

    @param command: The command.
    @param args: The arguments, the name first.
    @return: The error reply if the count is wrong, else C{None}.
    """
    arity = command.arity
    count = len(args)
    if count == arity or (arity < 0 and count >= -arity):
        return None
    return ErrorReply(arity_error_message(command.name))


def _sub_arity(args: list[bytes], arity: int, name: str) -> None:
    """
    Check a subcommand's argument count (counting the command name).

    @raise CommandError: If it is wrong.
    """
    count = len(args)
    if count != arity and (arity > 0 or count < -arity):
        raise CommandError(arity_error_message(name))


def _text(value: bytes) -> str:
    """
    An argument as Redis prints it in an error message.

    @param value: The argument.
    @return: Its text (Latin-1, so any byte survives).
    """
    return value.decode("latin-1")


def _unknown_subcommand(sub: bytes, command: str) -> str:
    """
    Redis's message for a subcommand it does not have.
    """
    return f"ERR unknown subcommand '{_text(sub)[:128]}'. Try {command} HELP."


def unknown_command(args: list[bytes]) -> ErrorReply:
    """
    Redis's reply to a command it does not have, quoting the name as sent
    and the start of the arguments::

        -ERR unknown command 'FOO', with args beginning with: 'a' 'b'

    (with a space after each quoted argument, as Redis writes it).

    @param args: The command, the name first.
    @return: The error reply.
    """
    quoted = ""
    for arg in args[1:]:
        if len(quoted) >= 128:
            break
        quoted += f"'{_text(arg)[: 128 - len(quoted)]}' "
    return ErrorReply(
        f"ERR unknown command '{_text(args[0])[:128]}', with args beginning "
        f"with: {quoted}"
    )


def run(
    command: Command, store: Store, session: Session, args: list[bytes], now: int
) -> object:
    """
    Carry out a command whose arity has been checked.

    @param command: The command; it must have a handler.
    @param store: The key space.
    @param session: The connection's session.
    @param args: The arguments, the name first.
    @param now: The time now in milliseconds (expired keys already gone).
    @return: The reply value, or an L{ErrorReply} if the command failed.
    """
    handler = command.handler
    assert handler is not None, f"{command.name} is run by the server's states"
    try:
        return handler(store, session, args, now)
    except CommandError as e:
        return ErrorReply(e.message)
