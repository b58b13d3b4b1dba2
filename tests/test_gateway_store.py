import os
import sqlite3

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.gateway import store as S
from nymtx.gateway.store import MailboxStore, StoreError

ALICE, BOB = b"a" * 32, b"b" * 32


class Store(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.path = os.path.join(self.mktemp(), "g.sqlite")
        os.makedirs(os.path.dirname(self.path))
        self.store = self.open()

    def open(self, **kw):
        store = MailboxStore.open(self.clock, self.path, **kw)
        self.addCleanup(lambda: store.db.close())
        return store

    def committed(self, key):
        # a second connection sees only what is committed
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT COUNT(*) FROM messages WHERE client_key=?",
                              (key,)).fetchone()[0]
        finally:
            db.close()

    def test_wal_mode(self):
        mode = self.store.db.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertEqual(mode, "wal")

    def test_unregistered_dropped(self):
        self.assertEqual(self.store.add(ALICE, b"x"), S.UNREGISTERED)
        self.assertEqual(self.store.pending, 0)

    def test_batched_commit_on_clock(self):
        store = self.open(commit_interval=0.005)
        store.register(ALICE, b"t" * 32)
        for i in range(3):
            self.assertIsNone(store.add(ALICE, b"m%d" % i))
        self.assertEqual(self.committed(ALICE), 0)
        self.assertEqual(store.stored, 0)
        self.clock.advance(store.commit_interval / 2)
        self.assertEqual(self.committed(ALICE), 0)
        self.clock.advance(store.commit_interval)
        self.assertEqual(self.committed(ALICE), 3)
        self.assertEqual(store.stored, 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_default_commits_at_the_end_of_the_turn(self):
        self.assertEqual(self.store.commit_interval, 0)
        self.store.register(ALICE, b"t" * 32)
        for i in range(3):
            self.store.add(ALICE, b"m%d" % i)
        # same turn: buffered, not yet stored
        self.assertEqual(self.committed(ALICE), 0)
        self.clock.advance(0)
        self.assertEqual(self.committed(ALICE), 3)
        self.assertEqual(self.store.stored, 3)

    def test_batched_commit_on_count(self):
        store = self.open(commit_batch=4)
        store.register(ALICE, b"t" * 32)
        for i in range(4):
            store.add(ALICE, b"m")
        self.assertEqual(self.committed(ALICE), 4)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_close_flushes(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.add(ALICE, b"late")
        self.store.close()
        self.assertEqual(self.committed(ALICE), 1)

    def test_pull_oldest_first_and_ack(self):
        self.store.register(ALICE, b"t" * 32)
        for i in range(5):
            self.store.add(ALICE, b"m%d" % i)
        self.store.flush()
        got = self.store.pull(ALICE, 3)
        self.assertEqual([m for _, m in got], [b"m0", b"m1", b"m2"])
        self.assertEqual(self.store.ack(ALICE, [i for i, _ in got]), 3)
        self.assertEqual([m for _, m in self.store.pull(ALICE, 10)], [b"m3", b"m4"])
        self.assertEqual(self.store.usage(ALICE), (2, 4))

    def test_unacked_pulled_again(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.add(ALICE, b"m")
        self.store.flush()
        self.assertEqual(self.store.pull(ALICE, 10), self.store.pull(ALICE, 10))

    def test_other_clients_ids_are_untouched(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.register(BOB, b"u" * 32)
        self.store.add(ALICE, b"for alice")
        self.store.flush()
        [(ident, _)] = self.store.pull(ALICE, 10)
        self.assertEqual(self.store.pull(BOB, 10), [])
        self.assertEqual(self.store.ack(BOB, [ident, ident + 1, -1, 2 ** 64]), 0)
        self.assertEqual(self.store.pull(ALICE, 10), [(ident, b"for alice")])

    def test_quota_messages(self):
        store = self.open(quota_messages=2)
        store.register(ALICE, b"t" * 32)
        self.assertIsNone(store.add(ALICE, b"1"))
        self.assertIsNone(store.add(ALICE, b"2"))
        self.assertEqual(store.add(ALICE, b"3"), S.OVER_MESSAGE_QUOTA)
        store.flush()
        store.ack(ALICE, [store.pull(ALICE, 1)[0][0]])
        self.assertIsNone(store.add(ALICE, b"4"))

    def test_quota_bytes(self):
        store = self.open(quota_bytes=10)
        store.register(ALICE, b"t" * 32)
        self.assertIsNone(store.add(ALICE, b"x" * 6))
        self.assertEqual(store.add(ALICE, b"x" * 5), S.OVER_BYTE_QUOTA)
        self.assertIsNone(store.add(ALICE, b"x" * 4))

    def test_quota_counts_stored_messages_after_reopen(self):
        store = self.open(quota_messages=2)
        store.register(ALICE, b"t" * 32)
        store.add(ALICE, b"1")
        store.add(ALICE, b"2")
        store.close()
        again = self.open(quota_messages=2)
        self.assertEqual(again.add(ALICE, b"3"), S.OVER_MESSAGE_QUOTA)

    def test_token_hash_only(self):
        token = b"T" * 32
        self.store.register(ALICE, token)
        raw = open(self.path, "rb").read() + open(self.path + "-wal", "rb").read()
        self.assertNotIn(token, raw)
        self.assertTrue(self.store.check_token(ALICE, token))
        self.assertFalse(self.store.check_token(ALICE, b"U" * 32))
        self.assertFalse(self.store.check_token(BOB, token))

    def test_reregister_revokes(self):
        self.store.register(ALICE, b"1" * 32)
        self.store.register(ALICE, b"2" * 32)
        self.assertFalse(self.store.check_token(ALICE, b"1" * 32))
        self.assertTrue(self.store.check_token(ALICE, b"2" * 32))
        self.assertEqual(self.store.registered_clients(), [ALICE])

    def test_survives_reopen(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.add(ALICE, b"kept")
        self.store.close()
        again = self.open()
        self.assertTrue(again.is_registered(ALICE))
        self.assertTrue(again.check_token(ALICE, b"t" * 32))
        self.assertEqual([m for _, m in again.pull(ALICE, 10)], [b"kept"])

    def test_ids_not_reused(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.add(ALICE, b"1")
        self.store.flush()
        [(first, _)] = self.store.pull(ALICE, 1)
        self.store.ack(ALICE, [first])
        self.store.close()
        again = self.open()
        again.add(ALICE, b"2")
        again.flush()
        [(second, _)] = again.pull(ALICE, 1)
        self.assertGreater(second, first)

    def test_not_a_gateway_database(self):
        path = os.path.join(self.mktemp())
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE other (x)")
        db.commit()
        db.close()
        e = self.assertRaises(StoreError, MailboxStore.open, self.clock, path)
        self.assertIn("not a gateway database", str(e))

    def test_garbage_file(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"this is not sqlite" * 100)
        e = self.assertRaises(StoreError, MailboxStore.open, self.clock, path)
        self.assertIn(path, str(e))

    def test_future_schema(self):
        self.store.db.execute("UPDATE version SET version=99")
        e = self.assertRaises(StoreError, MailboxStore.open, self.clock, self.path)
        self.assertIn("99", str(e))


class Failures(SynchronousTestCase):
    def test_commit_failure_is_counted_not_raised_from_timer(self):
        clock = Clock()
        store = MailboxStore.open(clock, self.mktemp())
        store.register(ALICE, b"t" * 32)
        store.add(ALICE, b"m")
        # a database that refuses writes, as a full disk would
        store.db.execute("PRAGMA query_only=ON")
        clock.advance(1)
        self.assertEqual((store.stored, store.lost, store.pending), (0, 1, 0))
        self.assertEqual(store.usage(ALICE), (0, 0))
        self.assertEqual(len(self.flushLoggedErrors(StoreError)), 1)
        store.db.execute("PRAGMA query_only=OFF")
        store.add(ALICE, b"m2")
        store.close()

    def test_closed_database_is_a_store_error_everywhere(self):
        # Whatever sqlite raises reaches callers as StoreError, the one
        # exception the gateway's protocol turns into an `internal` answer.
        store = MailboxStore.open(Clock(), self.mktemp())
        store.register(ALICE, b"t" * 32)
        store.add(ALICE, b"m")
        store.db.close()
        self.assertRaises(StoreError, store.flush)
        self.assertEqual((store.lost, store.usage(ALICE)), (1, (0, 0)))
        self.assertRaises(StoreError, store.register, ALICE, b"u" * 32)
        self.assertRaises(StoreError, store.check_token, ALICE, b"t" * 32)
        self.assertRaises(StoreError, store.pull, ALICE, 10)
        self.assertRaises(StoreError, store.ack, ALICE, [1])
