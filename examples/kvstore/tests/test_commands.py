"""
Every command of the kvstore example through the protocol: an in-memory
transport and a L{task.Clock}, exact reply bytes as Redis 7.0 sends them.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from examples.kvstore import KVStoreProtocol, Store
from examples.kvstore.tests.helpers import Connection, command

OK = b"+OK\r\n"
NIL = b"$-1\r\n"
WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NOT_INTEGER = b"-ERR value is not an integer or out of range\r\n"


def bulk(value: bytes) -> bytes:
    """
    The RESP bulk string reply for C{value}.
    """
    return b"$%d\r\n%s\r\n" % (len(value), value)


class ConnectionCommandTests(SynchronousTestCase):
    """
    PING, ECHO, SELECT, DBSIZE, FLUSHDB/FLUSHALL, CONFIG, COMMAND, CLIENT.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_ping(self) -> None:
        """PING answers +PONG, or its argument as a bulk string."""
        self.assertEqual(self.c.call("PING"), b"+PONG\r\n")
        self.assertEqual(self.c.call("PING", "hi"), bulk(b"hi"))
        self.assertEqual(
            self.c.call("PING", "a", "b"),
            b"-ERR wrong number of arguments for 'ping' command\r\n",
        )

    def test_inline_ping(self) -> None:
        """An inline PING (redis-benchmark's PING_INLINE) is answered too."""
        self.assertEqual(self.c.send(b"PING\r\n"), b"+PONG\r\n")

    def test_echo(self) -> None:
        """ECHO returns its argument, binary-safe."""
        self.assertEqual(self.c.call("ECHO", b"a\r\nb\0"), bulk(b"a\r\nb\0"))

    def test_select(self) -> None:
        """Only database 0 exists."""
        self.assertEqual(self.c.call("SELECT", "0"), OK)
        self.assertEqual(
            self.c.call("SELECT", "1"), b"-ERR DB index is out of range\r\n"
        )
        self.assertEqual(self.c.call("SELECT", "x"), NOT_INTEGER)

    def test_dbsize_and_flush(self) -> None:
        """DBSIZE counts keys; FLUSHDB and FLUSHALL (SYNC/ASYNC) empty them."""
        self.c.call("MSET", "a", "1", "b", "2")
        self.assertEqual(self.c.call("DBSIZE"), b":2\r\n")
        self.assertEqual(self.c.call("FLUSHDB"), OK)
        self.assertEqual(self.c.call("DBSIZE"), b":0\r\n")
        self.c.call("SET", "a", "1")
        self.assertEqual(self.c.call("FLUSHALL", "ASYNC"), OK)
        self.assertEqual(self.c.call("DBSIZE"), b":0\r\n")
        self.assertEqual(self.c.call("FLUSHALL", "sync"), OK)
        self.assertEqual(self.c.call("FLUSHDB", "NOW"), b"-ERR syntax error\r\n")

    def test_config_get(self) -> None:
        """CONFIG GET answers what redis-benchmark asks, *0 for the rest."""
        self.assertEqual(
            self.c.call("CONFIG", "GET", "save"), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
        )
        self.assertEqual(
            self.c.call("CONFIG", "GET", "appendonly"),
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        )
        self.assertEqual(self.c.call("CONFIG", "GET", "maxmemory"), b"*0\r\n")
        self.assertEqual(
            self.c.call("CONFIG", "GET"),
            b"-ERR wrong number of arguments for 'config|get' command\r\n",
        )
        self.assertEqual(
            self.c.call("CONFIG", "SET", "save", ""),
            b"-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n",
        )

    def test_config_get_pattern(self) -> None:
        """CONFIG GET takes glob patterns, as Redis does."""
        self.assertEqual(
            self.c.call("CONFIG", "GET", "app*"),
            b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n",
        )

    def test_command(self) -> None:
        """COMMAND and COMMAND DOCS (what redis-cli sends) answer *0."""
        self.assertEqual(self.c.call("COMMAND", "DOCS"), b"*0\r\n")
        self.assertEqual(self.c.call("COMMAND"), b"*0\r\n")
        self.assertEqual(
            self.c.call("COMMAND", "NOPE"),
            b"-ERR unknown subcommand 'NOPE'. Try COMMAND HELP.\r\n",
        )

    def test_client(self) -> None:
        """CLIENT SETNAME, SETINFO, GETNAME and ID."""
        self.assertEqual(self.c.call("CLIENT", "GETNAME"), NIL)
        self.assertEqual(self.c.call("CLIENT", "SETNAME", "me"), OK)
        self.assertEqual(self.c.call("CLIENT", "GETNAME"), bulk(b"me"))
        self.assertEqual(self.c.call("CLIENT", "SETINFO", "LIB-NAME", "redis-py"), OK)
        self.assertEqual(
            self.c.call("CLIENT", "ID"), b":%d\r\n" % self.c.protocol.session.id
        )
        self.assertEqual(
            self.c.call("CLIENT", "SETINFO", "LIB-VER"),
            b"-ERR wrong number of arguments for 'client|setinfo' command\r\n",
        )
        self.assertEqual(
            self.c.call("CLIENT", "KILL", "x"),
            b"-ERR unknown subcommand 'KILL'. Try CLIENT HELP.\r\n",
        )

    def test_client_ids_differ(self) -> None:
        """Each connection has its own CLIENT ID."""
        other = Connection()
        self.assertNotEqual(self.c.call("CLIENT", "ID"), other.call("CLIENT", "ID"))


class ErrorWordingTests(SynchronousTestCase):
    """
    Unknown commands and wrong arity, in Redis's exact words.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_unknown_command(self) -> None:
        """The name as sent, then each argument quoted with a space after."""
        self.assertEqual(
            self.c.call("FOO", "a", "b"),
            b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
        )
        self.assertEqual(
            self.c.call("foo"),
            b"-ERR unknown command 'foo', with args beginning with: \r\n",
        )

    def test_unknown_command_quotes_at_most_128_characters(self) -> None:
        """Long arguments are cut as Redis cuts them."""
        reply = self.c.call("FOO", "x" * 200, "y")
        self.assertEqual(
            reply,
            b"-ERR unknown command 'FOO', with args beginning with: '"
            + b"x" * 128
            + b"' \r\n",
        )

    def test_unknown_command_sanitises_newlines(self) -> None:
        """CR and LF in the quoted name become spaces, as in Redis."""
        self.assertEqual(
            self.c.call("A\r\nB"),
            b"-ERR unknown command 'A  B', with args beginning with: \r\n",
        )

    def test_wrong_arity(self) -> None:
        """The lower-case name in the arity error, whatever case was sent."""
        self.assertEqual(
            self.c.call("GET"),
            b"-ERR wrong number of arguments for 'get' command\r\n",
        )
        self.assertEqual(
            self.c.call("gEt", "a", "b"),
            b"-ERR wrong number of arguments for 'get' command\r\n",
        )

    def test_names_are_case_insensitive(self) -> None:
        """Commands are found in any case."""
        self.assertEqual(self.c.call("sEt", "k", "v"), OK)
        self.assertEqual(self.c.call("get", "k"), bulk(b"v"))

    def test_connection_goes_on_after_an_error(self) -> None:
        """An error reply does not close the connection."""
        self.c.call("NOPE")
        self.assertFalse(self.c.closed)
        self.assertEqual(self.c.call("PING"), b"+PONG\r\n")


class StringTests(SynchronousTestCase):
    """
    SET (with options), GET, GETSET, DEL, EXISTS, MSET, MGET, counters.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_set_and_get(self) -> None:
        """SET stores a binary-safe value; GET of a missing key is nil."""
        self.assertEqual(self.c.call("SET", "k", b"\x00\xff\r\n"), OK)
        self.assertEqual(self.c.call("GET", "k"), bulk(b"\x00\xff\r\n"))
        self.assertEqual(self.c.call("GET", "missing"), NIL)

    def test_set_nx_xx(self) -> None:
        """NX sets only a new key, XX only an existing one; else nil."""
        self.assertEqual(self.c.call("SET", "k", "1", "XX"), NIL)
        self.assertEqual(self.c.call("SET", "k", "1", "NX"), OK)
        self.assertEqual(self.c.call("SET", "k", "2", "NX"), NIL)
        self.assertEqual(self.c.call("SET", "k", "3", "xx"), OK)
        self.assertEqual(self.c.call("GET", "k"), bulk(b"3"))
        self.assertEqual(
            self.c.call("SET", "k", "4", "NX", "XX"), b"-ERR syntax error\r\n"
        )

    def test_set_get_option(self) -> None:
        """SET ... GET returns the old value."""
        self.assertEqual(self.c.call("SET", "k", "1", "GET"), NIL)
        self.assertEqual(self.c.call("SET", "k", "2", "GET"), bulk(b"1"))

    def test_set_bad_expire(self) -> None:
        """Zero, negative or non-numeric EX/PX are refused as Redis words it."""
        invalid = b"-ERR invalid expire time in 'set' command\r\n"
        self.assertEqual(self.c.call("SET", "k", "v", "EX", "0"), invalid)
        self.assertEqual(self.c.call("SET", "k", "v", "PX", "-5"), invalid)
        self.assertEqual(self.c.call("SET", "k", "v", "EX", "soon"), NOT_INTEGER)
        self.assertEqual(self.c.call("SET", "k", "v", "EX"), b"-ERR syntax error\r\n")
        self.assertEqual(
            self.c.call("SET", "k", "v", "EX", "1", "PX", "1"),
            b"-ERR syntax error\r\n",
        )
        self.assertEqual(self.c.call("EXISTS", "k"), b":0\r\n")

    def test_set_overwrites_other_types(self) -> None:
        """SET replaces a list with a string."""
        self.c.call("RPUSH", "k", "a")
        self.assertEqual(self.c.call("SET", "k", "v"), OK)
        self.assertEqual(self.c.call("GET", "k"), bulk(b"v"))

    def test_get_wrong_type(self) -> None:
        """GET of a list is WRONGTYPE."""
        self.c.call("RPUSH", "l", "a")
        self.assertEqual(self.c.call("GET", "l"), WRONGTYPE)

    def test_getset(self) -> None:
        """GETSET returns the old value (nil if none) and sets the new."""
        self.assertEqual(self.c.call("GETSET", "k", "1"), NIL)
        self.assertEqual(self.c.call("GETSET", "k", "2"), bulk(b"1"))
        self.assertEqual(self.c.call("GET", "k"), bulk(b"2"))

    def test_del_and_exists(self) -> None:
        """DEL and EXISTS count keys; EXISTS counts a repeated key twice."""
        self.c.call("MSET", "a", "1", "b", "2")
        self.assertEqual(self.c.call("EXISTS", "a", "b", "a", "z"), b":3\r\n")
        self.assertEqual(self.c.call("DEL", "a", "z"), b":1\r\n")
        self.assertEqual(self.c.call("EXISTS", "a"), b":0\r\n")

    def test_mset_mget(self) -> None:
        """MGET gives nil for missing keys and for non-strings."""
        self.assertEqual(self.c.call("MSET", "a", "1", "b", "2"), OK)
        self.c.call("SADD", "s", "x")
        self.assertEqual(
            self.c.call("MGET", "a", "missing", "b", "s"),
            b"*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n$-1\r\n",
        )
        self.assertEqual(
            self.c.call("MSET", "a", "1", "b"),
            b"-ERR wrong number of arguments for 'mset' command\r\n",
        )

    def test_counters(self) -> None:
        """INCR, INCRBY, DECR and DECRBY start from 0 and store the number."""
        self.assertEqual(self.c.call("INCR", "n"), b":1\r\n")
        self.assertEqual(self.c.call("INCRBY", "n", "41"), b":42\r\n")
        self.assertEqual(self.c.call("DECR", "n"), b":41\r\n")
        self.assertEqual(self.c.call("DECRBY", "n", "-9"), b":50\r\n")
        self.assertEqual(self.c.call("GET", "n"), bulk(b"50"))

    def test_counter_errors(self) -> None:
        """Non-integers and overflow are refused with Redis's words."""
        self.c.call("SET", "s", "abc")
        self.assertEqual(self.c.call("INCR", "s"), NOT_INTEGER)
        self.assertEqual(self.c.call("INCRBY", "n", "+1"), NOT_INTEGER)
        self.assertEqual(self.c.call("INCRBY", "n", "01"), NOT_INTEGER)
        self.c.call("SET", "big", str(2**63 - 1))
        self.assertEqual(
            self.c.call("INCR", "big"),
            b"-ERR increment or decrement would overflow\r\n",
        )
        self.c.call("RPUSH", "l", "a")
        self.assertEqual(self.c.call("INCR", "l"), WRONGTYPE)


class ExpiryTests(SynchronousTestCase):
    """
    EXPIRE, PEXPIRE, TTL, PTTL, PERSIST and SET EX/PX, on the fake clock.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_set_ex_expires_on_the_clock(self) -> None:
        """A key set with EX 10 is there at 9.999 s and gone at 10 s."""
        self.c.call("SET", "k", "v", "EX", "10")
        self.c.clock.advance(9.999)
        self.assertEqual(self.c.call("GET", "k"), bulk(b"v"))
        self.c.clock.advance(0.001)
        self.assertEqual(self.c.call("GET", "k"), NIL)
        self.assertEqual(self.c.call("DBSIZE"), b":0\r\n")

    def test_set_px(self) -> None:
        """PX counts milliseconds."""
        self.c.call("SET", "k", "v", "PX", "1500")
        self.assertEqual(self.c.call("PTTL", "k"), b":1500\r\n")
        self.c.clock.advance(1.5)
        self.assertEqual(self.c.call("EXISTS", "k"), b":0\r\n")

    def test_no_timer_is_left_behind(self) -> None:
        """Expiring keys schedule nothing on the clock."""
        for i in range(100):
            self.c.call("SET", f"k{i}", "v", "EX", str(i + 1))
        self.assertEqual(self.c.clock.getDelayedCalls(), [])

    def test_ttl_and_pttl(self) -> None:
        """TTL rounds to seconds; -1 without a deadline, -2 without a key."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("TTL", "k"), b":-1\r\n")
        self.assertEqual(self.c.call("TTL", "missing"), b":-2\r\n")
        self.assertEqual(self.c.call("PTTL", "missing"), b":-2\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "100"), b":1\r\n")
        self.c.clock.advance(0.6)
        self.assertEqual(self.c.call("PTTL", "k"), b":99400\r\n")
        self.assertEqual(self.c.call("TTL", "k"), b":99\r\n")

    def test_pexpire_and_persist(self) -> None:
        """PERSIST removes the deadline; a second PERSIST answers 0."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("PEXPIRE", "k", "100"), b":1\r\n")
        self.assertEqual(self.c.call("PERSIST", "k"), b":1\r\n")
        self.assertEqual(self.c.call("PERSIST", "k"), b":0\r\n")
        self.c.clock.advance(1)
        self.assertEqual(self.c.call("GET", "k"), bulk(b"v"))

    def test_expire_missing_key(self) -> None:
        """EXPIRE of a missing key answers 0."""
        self.assertEqual(self.c.call("EXPIRE", "missing", "10"), b":0\r\n")

    def test_expire_in_the_past_deletes(self) -> None:
        """A deadline not in the future deletes the key at once."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("EXPIRE", "k", "0"), b":1\r\n")
        self.assertEqual(self.c.call("EXISTS", "k"), b":0\r\n")

    def test_expire_options(self) -> None:
        """NX, XX, GT and LT decide whether the deadline changes."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("EXPIRE", "k", "10", "XX"), b":0\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "10", "NX"), b":1\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "20", "NX"), b":0\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "5", "GT"), b":0\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "50", "GT"), b":1\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "60", "LT"), b":0\r\n")
        self.assertEqual(self.c.call("EXPIRE", "k", "30", "LT"), b":1\r\n")
        self.assertEqual(self.c.call("TTL", "k"), b":30\r\n")
        self.assertEqual(
            self.c.call("EXPIRE", "k", "1", "NX", "XX"),
            b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
        )
        self.assertEqual(self.c.call("EXPIRE", "k", "x"), NOT_INTEGER)

    def test_set_clears_the_deadline_and_keepttl_keeps_it(self) -> None:
        """SET drops a key's deadline; SET ... KEEPTTL and INCR keep it."""
        self.c.call("SET", "k", "1", "EX", "10")
        self.c.call("SET", "k", "2", "KEEPTTL")
        self.c.call("INCR", "k")
        self.assertEqual(self.c.call("TTL", "k"), b":10\r\n")
        self.c.call("SET", "k", "4")
        self.assertEqual(self.c.call("TTL", "k"), b":-1\r\n")

    def test_expiry_is_shared_between_connections(self) -> None:
        """A key expired for one connection is gone for another."""
        clock = task.Clock()
        store = Store()
        a = Connection(store, clock)
        b = Connection(store, clock)
        a.call("SET", "k", "v", "PX", "10")
        clock.advance(0.01)
        self.assertEqual(b.call("EXISTS", "k"), b":0\r\n")


class ListTests(SynchronousTestCase):
    """
    LPUSH, RPUSH, LPOP, RPOP, LLEN, LRANGE.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_push_and_range(self) -> None:
        """Pushes return the length; LRANGE takes negative indexes."""
        self.assertEqual(self.c.call("RPUSH", "l", "b", "c"), b":2\r\n")
        self.assertEqual(self.c.call("LPUSH", "l", "a", "z"), b":4\r\n")
        self.assertEqual(
            self.c.call("LRANGE", "l", "0", "-1"),
            b"*4\r\n$1\r\nz\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
        )
        self.assertEqual(
            self.c.call("LRANGE", "l", "-2", "100"), b"*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
        )
        self.assertEqual(self.c.call("LRANGE", "l", "3", "1"), b"*0\r\n")
        self.assertEqual(self.c.call("LRANGE", "missing", "0", "-1"), b"*0\r\n")
        self.assertEqual(self.c.call("LRANGE", "l", "a", "1"), NOT_INTEGER)
        self.assertEqual(self.c.call("LLEN", "l"), b":4\r\n")
        self.assertEqual(self.c.call("LLEN", "missing"), b":0\r\n")

    def test_pop(self) -> None:
        """LPOP and RPOP take from either end; the empty list is deleted."""
        self.c.call("RPUSH", "l", "a", "b", "c")
        self.assertEqual(self.c.call("LPOP", "l"), bulk(b"a"))
        self.assertEqual(self.c.call("RPOP", "l"), bulk(b"c"))
        self.assertEqual(self.c.call("RPOP", "l"), bulk(b"b"))
        self.assertEqual(self.c.call("EXISTS", "l"), b":0\r\n")
        self.assertEqual(self.c.call("LPOP", "l"), NIL)

    def test_pop_count(self) -> None:
        """With a count: an array, empty for 0, the null array for no key."""
        self.c.call("RPUSH", "l", "a", "b", "c")
        self.assertEqual(self.c.call("LPOP", "l", "2"), b"*2\r\n$1\r\na\r\n$1\r\nb\r\n")
        self.assertEqual(self.c.call("LPOP", "l", "0"), b"*0\r\n")
        self.assertEqual(self.c.call("RPOP", "l", "9"), b"*1\r\n$1\r\nc\r\n")
        self.assertEqual(self.c.call("LPOP", "l", "2"), b"*-1\r\n")
        self.assertEqual(
            self.c.call("LPOP", "l", "-1"),
            b"-ERR value is out of range, must be positive\r\n",
        )
        self.assertEqual(
            self.c.call("LPOP", "l", "1", "2"),
            b"-ERR wrong number of arguments for 'lpop' command\r\n",
        )

    def test_wrong_type(self) -> None:
        """List commands on a string are WRONGTYPE."""
        self.c.call("SET", "s", "v")
        for args in (("LPUSH", "s", "x"), ("LPOP", "s"), ("LLEN", "s")):
            self.assertEqual(self.c.call(*args), WRONGTYPE)


class SetTests(SynchronousTestCase):
    """
    SADD, SREM, SCARD, SISMEMBER, SPOP.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_add_remove_count(self) -> None:
        """SADD and SREM count what changed; SISMEMBER answers 1 or 0."""
        self.assertEqual(self.c.call("SADD", "s", "a", "b", "a"), b":2\r\n")
        self.assertEqual(self.c.call("SADD", "s", "b", "c"), b":1\r\n")
        self.assertEqual(self.c.call("SCARD", "s"), b":3\r\n")
        self.assertEqual(self.c.call("SISMEMBER", "s", "a"), b":1\r\n")
        self.assertEqual(self.c.call("SISMEMBER", "s", "z"), b":0\r\n")
        self.assertEqual(self.c.call("SREM", "s", "a", "z"), b":1\r\n")
        self.assertEqual(self.c.call("SREM", "s", "b", "c"), b":2\r\n")
        self.assertEqual(self.c.call("EXISTS", "s"), b":0\r\n")
        self.assertEqual(self.c.call("SCARD", "s"), b":0\r\n")

    def test_spop(self) -> None:
        """SPOP removes and returns a member; nil when there is none."""
        self.c.call("SADD", "s", "only")
        self.assertEqual(self.c.call("SPOP", "s"), bulk(b"only"))
        self.assertEqual(self.c.call("SPOP", "s"), NIL)
        self.assertEqual(self.c.call("SPOP", "s", "3"), b"*0\r\n")

    def test_spop_count(self) -> None:
        """SPOP with a count removes that many distinct members."""
        self.c.call("SADD", "s", "a", "b", "c")
        reply = self.c.call("SPOP", "s", "2")
        self.assertTrue(reply.startswith(b"*2\r\n"), reply)
        self.assertEqual(self.c.call("SCARD", "s"), b":1\r\n")
        self.assertEqual(
            self.c.call("SPOP", "s", "-1"),
            b"-ERR value is out of range, must be positive\r\n",
        )

    def test_wrong_type(self) -> None:
        """Set commands on a string are WRONGTYPE."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("SADD", "k", "x"), WRONGTYPE)


class HashTests(SynchronousTestCase):
    """
    HSET, HGET, HDEL, HGETALL.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_hash(self) -> None:
        """HSET counts new fields; HGETALL is a flat array in RESP2."""
        self.assertEqual(self.c.call("HSET", "h", "f", "1", "g", "2"), b":2\r\n")
        self.assertEqual(self.c.call("HSET", "h", "f", "3"), b":0\r\n")
        self.assertEqual(self.c.call("HGET", "h", "f"), bulk(b"3"))
        self.assertEqual(self.c.call("HGET", "h", "nope"), NIL)
        self.assertEqual(self.c.call("HGET", "missing", "f"), NIL)
        self.assertEqual(
            self.c.call("HGETALL", "h"),
            b"*4\r\n$1\r\nf\r\n$1\r\n3\r\n$1\r\ng\r\n$1\r\n2\r\n",
        )
        self.assertEqual(self.c.call("HDEL", "h", "f", "nope"), b":1\r\n")
        self.assertEqual(self.c.call("HDEL", "h", "g"), b":1\r\n")
        self.assertEqual(self.c.call("EXISTS", "h"), b":0\r\n")
        self.assertEqual(self.c.call("HGETALL", "h"), b"*0\r\n")

    def test_hset_odd_arguments(self) -> None:
        """A field without a value is an arity error."""
        self.assertEqual(
            self.c.call("HSET", "h", "f", "1", "g"),
            b"-ERR wrong number of arguments for 'hset' command\r\n",
        )

    def test_wrong_type(self) -> None:
        """Hash commands on a string are WRONGTYPE."""
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("HGET", "k", "f"), WRONGTYPE)


class HelloTests(SynchronousTestCase):
    """
    HELLO and the per-connection RESP version.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_hello_3_switches_to_resp3(self) -> None:
        """HELLO 3 answers a map with proto 3; later replies are RESP3."""
        reply = self.c.call("HELLO", "3")
        self.assertTrue(reply.startswith(b"%7\r\n"), reply)
        self.assertIn(b"$5\r\nproto\r\n:3\r\n", reply)
        self.assertEqual(self.c.call("GET", "missing"), b"_\r\n")
        self.c.call("SET", "a", "1")
        self.assertEqual(self.c.call("MGET", "a", "missing"), b"*2\r\n$1\r\n1\r\n_\r\n")
        self.c.call("HSET", "h", "f", "v")
        self.assertEqual(self.c.call("HGETALL", "h"), b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n")
        self.assertEqual(self.c.call("LPOP", "missing", "1"), b"_\r\n")

    def test_hello_2_is_a_flat_array(self) -> None:
        """HELLO 2 answers the same fields as a flat array."""
        reply = self.c.call("HELLO", "2")
        self.assertTrue(reply.startswith(b"*14\r\n"), reply)
        self.assertIn(b"$5\r\nproto\r\n:2\r\n", reply)
        self.assertEqual(self.c.call("GET", "missing"), NIL)

    def test_hello_back_to_2(self) -> None:
        """HELLO 2 after HELLO 3 goes back to RESP2."""
        self.c.call("HELLO", "3")
        self.c.call("HELLO", "2")
        self.assertEqual(self.c.call("GET", "missing"), NIL)

    def test_hello_without_version_keeps_it(self) -> None:
        """HELLO alone describes the server without switching."""
        reply = self.c.call("HELLO")
        self.assertIn(b"$5\r\nproto\r\n:2\r\n", reply)

    def test_hello_other_versions(self) -> None:
        """Versions other than 2 and 3 get NOPROTO and change nothing."""
        self.assertEqual(
            self.c.call("HELLO", "4"), b"-NOPROTO unsupported protocol version\r\n"
        )
        self.assertEqual(
            self.c.call("HELLO", "x"),
            b"-ERR Protocol version is not an integer or out of range\r\n",
        )
        self.assertEqual(self.c.call("GET", "missing"), NIL)

    def test_hello_options(self) -> None:
        """AUTH is accepted (no passwords here); SETNAME names the client."""
        self.c.call("HELLO", "3", "AUTH", "default", "pw", "SETNAME", "me")
        self.assertEqual(self.c.call("CLIENT", "GETNAME"), b"$2\r\nme\r\n")
        self.assertEqual(
            self.c.call("HELLO", "3", "FOO"),
            b"-ERR Syntax error in HELLO option 'FOO'\r\n",
        )


class TransactionTests(SynchronousTestCase):
    """
    MULTI, EXEC and DISCARD: the transaction state.
    """

    def setUp(self) -> None:
        self.c = Connection()

    def test_exec_runs_queued_commands(self) -> None:
        """Commands are queued, then run by EXEC, which returns all replies."""
        self.assertEqual(self.c.call("MULTI"), OK)
        self.assertEqual(self.c.call("INCR", "n"), b"+QUEUED\r\n")
        self.assertEqual(self.c.call("INCR", "n"), b"+QUEUED\r\n")
        self.assertEqual(self.c.call("LPUSH", "n", "x"), b"+QUEUED\r\n")
        self.assertEqual(self.c.store.data, {})
        self.assertEqual(
            self.c.call("EXEC"),
            b"*3\r\n:1\r\n:2\r\n-WRONGTYPE Operation against a key holding the "
            b"wrong kind of value\r\n",
        )
        self.assertEqual(self.c.call("GET", "n"), bulk(b"2"))

    def test_discard(self) -> None:
        """DISCARD drops the queue and leaves the transaction."""
        self.c.call("MULTI")
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("DISCARD"), OK)
        self.assertEqual(self.c.call("GET", "k"), NIL)
        self.assertEqual(self.c.call("EXEC"), b"-ERR EXEC without MULTI\r\n")
        self.assertEqual(self.c.call("DISCARD"), b"-ERR DISCARD without MULTI\r\n")

    def test_errors_while_queuing_abort_exec(self) -> None:
        """An unknown command or bad arity in MULTI makes EXEC abort."""
        self.c.call("MULTI")
        self.c.call("SET", "k", "v")
        self.assertEqual(
            self.c.call("GET"),
            b"-ERR wrong number of arguments for 'get' command\r\n",
        )
        self.assertEqual(
            self.c.call("EXEC"),
            b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        )
        self.assertEqual(self.c.call("GET", "k"), NIL)

    def test_nested_multi(self) -> None:
        """MULTI inside MULTI is an error that does not abort."""
        self.c.call("MULTI")
        self.assertEqual(
            self.c.call("MULTI"), b"-ERR MULTI calls can not be nested\r\n"
        )
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("EXEC"), b"*1\r\n+OK\r\n")

    def test_exec_in_resp3(self) -> None:
        """EXEC's array carries RESP3 nulls after HELLO 3."""
        self.c.call("HELLO", "3")
        self.c.call("MULTI")
        self.c.call("GET", "missing")
        self.assertEqual(self.c.call("EXEC"), b"*1\r\n_\r\n")

    def test_queue_limit(self) -> None:
        """Past max_queued_commands, commands are refused and EXEC aborts."""
        self.c.protocol.max_queued_commands = 2
        self.c.call("MULTI")
        self.c.call("PING")
        self.c.call("PING")
        self.assertEqual(
            self.c.call("PING"),
            b"-ERR transaction exceeds max_queued_commands=2\r\n",
        )
        self.assertTrue(self.c.call("EXEC").startswith(b"-EXECABORT"))

    def test_quit_in_multi(self) -> None:
        """QUIT inside a transaction closes without running it."""
        self.c.call("MULTI")
        self.c.call("SET", "k", "v")
        self.assertEqual(self.c.call("QUIT"), OK)
        self.assertTrue(self.c.closed)
        self.assertEqual(self.c.store.data, {})


class PipelineTests(SynchronousTestCase):
    """
    Many commands in one read: replies in order, in one write.
    """

    def test_transactions_in_one_read(self) -> None:
        """
        Commands that arrive in one read with MULTI, EXEC and DISCARD among
        them go to the state each belongs to, in order, in one write.
        """
        c = Connection()
        data = b"".join(
            [
                command("SET", "a", "1"),
                command("MULTI"),
                command("INCR", "a"),
                command("GET", "a"),
                command("EXEC"),
                command("GET", "a"),
                b"MULTI\r\n",
                command("SET", "a", "x"),
                command("DISCARD"),
                command("GET", "a"),
                command("EXEC"),
            ]
        )
        self.assertEqual(
            c.send(data),
            OK
            + OK
            + b"+QUEUED\r\n" * 2
            + b"*2\r\n:2\r\n$1\r\n2\r\n"
            + bulk(b"2")
            + OK
            + b"+QUEUED\r\n"
            + OK
            + bulk(b"2")
            + b"-ERR EXEC without MULTI\r\n",
        )
        self.assertEqual(c.writes, 1)

    def test_thousand_commands_in_one_write(self) -> None:
        """1,000 pipelined commands get 1,000 replies, in order, in one write."""
        c = Connection()
        data = b"".join(command("INCR", "n") for _ in range(1000))
        reply = c.send(data)
        self.assertEqual(reply, b"".join(b":%d\r\n" % i for i in range(1, 1001)))
        self.assertEqual(c.writes, 1)

    def test_each_read_is_answered_in_one_write(self) -> None:
        """Commands split over reads are answered once per read that ends one."""
        c = Connection()
        data = command("SET", "k", "v") + command("GET", "k") + command("PING")
        c.harness.feed(data[:30])
        c.harness.feed(data[30:])
        self.assertEqual(c.harness.take_output(), OK + bulk(b"v") + b"+PONG\r\n")
        self.assertEqual(c.writes, 2)

    def test_byte_by_byte(self) -> None:
        """Commands fed one byte at a time are answered the same."""
        c = Connection()
        data = command("SET", "k", "v") + b"GET k\r\n" + command("DEL", "k")
        c.harness.feed(data, chunk_size=1)
        self.assertEqual(c.harness.take_output(), OK + bulk(b"v") + b":1\r\n")

    def test_long_pipeline_is_flushed_in_batches(self) -> None:
        """Past max_pending_replies, replies are written in batches of it."""
        c = Connection(max_pending_replies=100)
        c.send(b"".join(command("PING") for _ in range(1000)))
        self.assertEqual(c.writes, 10)

    def test_client_that_does_not_read_is_not_read(self) -> None:
        """
        While the transport's send buffer is full, the server stops
        answering and its reading pauses; it resumes when the buffer drains.
        """
        c = Connection(max_pending_replies=10, receive_high_water=1000)
        c.harness.pause_writing()
        c.harness.feed(b"".join(command("PING") for _ in range(1000)))
        self.assertEqual(c.harness.take_output(), b"+PONG\r\n" * 10)
        self.assertTrue(c.harness.reading_paused)
        c.harness.resume_writing()
        self.assertEqual(c.harness.take_output(), b"+PONG\r\n" * 990)
        self.assertFalse(c.harness.reading_paused)

    def test_quit_drops_what_follows(self) -> None:
        """QUIT answers +OK, closes, and ignores the commands after it."""
        c = Connection()
        reply = c.send(
            command("SET", "a", "1") + command("QUIT") + command("SET", "b", "2")
        )
        self.assertEqual(reply, OK + OK)
        self.assertTrue(c.closed)
        self.assertEqual(c.store.data, {b"a": b"1"})

    def test_lost_connection_while_blocked_on_writes(self) -> None:
        """Losing the connection while waiting for the client to read ends cleanly."""
        c = Connection(max_pending_replies=1)
        c.harness.pause_writing()
        c.harness.feed(command("PING") + command("PING") + b"*1\r\n")
        c.harness.lose_connection()
        self.assertTrue(c.closed)
        self.assertTrue(c.protocol.conversation is not None)
        assert c.protocol.conversation is not None
        self.assertIsNone(self.successResultOf(c.protocol.conversation))


class ProtocolErrorTests(SynchronousTestCase):
    """
    Input Redis rejects: Redis's protocol error, then the connection closes.
    """

    def check(self, data: bytes, message: bytes) -> None:
        """
        Send C{data} after a PING and expect the PONG, C{-ERR Protocol error:
        <message>} and the connection closed.
        """
        c = Connection()
        self.assertEqual(
            c.send(command("PING") + data),
            b"+PONG\r\n-ERR Protocol error: " + message + b"\r\n",
        )
        self.assertTrue(c.closed)

    def test_invalid_multibulk_length(self) -> None:
        """A bad multibulk count."""
        self.check(b"*x\r\n", b"invalid multibulk length")

    def test_expected_dollar(self) -> None:
        """An element that is not a bulk string."""
        self.check(b"*1\r\n:1\r\n", b"expected '$', got ':'")

    def test_invalid_bulk_length(self) -> None:
        """A negative bulk length."""
        self.check(b"*1\r\n$-1\r\n", b"invalid bulk length")

    def test_unbalanced_quotes(self) -> None:
        """An inline command with an open quote."""
        self.check(b'SET k "v\r\n', b"unbalanced quotes in request")

    def test_too_big_inline_request(self) -> None:
        """64 KiB without a newline closes the connection: memory is bounded."""
        self.check(b"x" * (64 * 1024 + 1), b"too big inline request")

    def test_bulk_over_max_bulk_length(self) -> None:
        """An argument longer than max_bulk_length is refused before reading it."""
        c = Connection(max_bulk_length=10)
        self.assertEqual(
            c.send(b"*2\r\n$3\r\nGET\r\n$11\r\n"),
            b"-ERR Protocol error: invalid bulk length\r\n",
        )
        self.assertTrue(c.closed)


class DefaultStoreTests(SynchronousTestCase):
    """
    The store connections share by default.
    """

    def test_connections_share_the_class_store(self) -> None:
        """Two connections made without a store see the same keys."""
        self.assertIs(KVStoreProtocol().store, KVStoreProtocol().store)
