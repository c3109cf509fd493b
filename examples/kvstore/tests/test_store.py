"""
Tests for the kvstore's L{Store}: expiry by deadline, with no timer.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from examples.kvstore import Store


class StoreTests(SynchronousTestCase):
    """
    Deadlines, their heap, and the operations that change them.
    """

    def test_expire_due_deletes_due_keys_only(self) -> None:
        """Keys whose deadline is at or before now go; later ones stay."""
        store = Store()
        for key, deadline in ((b"a", 10), (b"b", 20), (b"c", 30)):
            store.replace(key, b"v")
            store.set_deadline(key, deadline)
        store.expire_due(20)
        self.assertEqual(sorted(store.data), [b"c"])
        self.assertEqual(store.expires, {b"c": 30})

    def test_changed_deadline_wins(self) -> None:
        """A key given a later deadline is not deleted at the earlier one."""
        store = Store()
        store.replace(b"k", b"v")
        store.set_deadline(b"k", 10)
        store.set_deadline(b"k", 100)
        store.expire_due(50)
        self.assertIn(b"k", store.data)
        store.expire_due(100)
        self.assertNotIn(b"k", store.data)

    def test_persist_and_replace_drop_the_deadline(self) -> None:
        """PERSIST and a plain SET make a key live past its old deadline."""
        store = Store()
        store.replace(b"a", b"v")
        store.set_deadline(b"a", 10)
        store.replace(b"b", b"v")
        store.set_deadline(b"b", 10)
        self.assertTrue(store.persist(b"a"))
        self.assertFalse(store.persist(b"a"))
        store.replace(b"b", b"w")
        store.expire_due(1000)
        self.assertEqual(sorted(store.data), [b"a", b"b"])

    def test_heap_stays_proportional_to_live_deadlines(self) -> None:
        """Re-expiring one key 100,000 times does not grow memory."""
        store = Store()
        store.replace(b"k", b"v")
        for deadline in range(100_000):
            store.set_deadline(b"k", 1_000_000 + deadline)
        self.assertLessEqual(len(store._heap), 2 * len(store.expires) + 65)

    def test_flush_and_delete(self) -> None:
        """delete() reports whether the key existed; flush() empties all."""
        store = Store()
        store.replace(b"k", b"v")
        store.set_deadline(b"k", 5)
        self.assertTrue(store.delete(b"k"))
        self.assertFalse(store.delete(b"k"))
        self.assertEqual(store.expires, {})
        store.replace(b"a", b"v")
        store.flush()
        self.assertEqual((len(store), store.expires), (0, {}))
        self.assertEqual(repr(store), "<Store keys=0 expiring=0>")
