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
        self.assertIn("not a nymtx gateway database", str(e))

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


class Upgrade(SynchronousTestCase):
    """A store written by the previous release (schema 1) opens and is upgraded."""

    def setUp(self):
        self.clock = Clock()
        self.path = os.path.join(self.mktemp(), "g.sqlite")
        os.makedirs(os.path.dirname(self.path))

    def write_v1(self):
        # the exact schema the previous release shipped, with data in it
        from importlib import resources
        db = sqlite3.connect(self.path)
        db.executescript(resources.files("nymtx.gateway").joinpath(
            "schema", "v1.sql").read_text())
        db.execute("INSERT INTO clients VALUES (?, ?, ?)",
                   (ALICE, S.token_hash(b"t" * 32), 1234.5))
        db.execute("INSERT INTO messages (client_key, body, received_at) VALUES (?, ?, ?)",
                   (ALICE, b"kept", 1300.0))
        db.commit()
        db.close()

    def test_v1_store_is_upgraded_and_nothing_is_lost(self):
        self.write_v1()
        store = MailboxStore.open(self.clock, self.path)
        self.addCleanup(store.db.close)
        self.assertEqual(store.db.execute("SELECT version FROM version").fetchall(),
                         [(S.SCHEMA_VERSION,)])
        self.assertTrue(store.check_token(ALICE, b"t" * 32))
        self.assertEqual([m for _, m in store.pull(ALICE, 10)], [b"kept"])
        self.assertEqual(store.usage(ALICE), (1, 4))
        # a registration of the old release counts as seen when it registered
        self.assertEqual(store.last_seen(ALICE), 1234.5)

    def test_upgraded_store_reopens_unchanged(self):
        self.write_v1()
        MailboxStore.open(self.clock, self.path).close()
        store = MailboxStore.open(self.clock, self.path)
        self.addCleanup(store.db.close)
        self.assertEqual([m for _, m in store.pull(ALICE, 10)], [b"kept"])

    def test_an_upgrade_that_fails_leaves_the_old_version(self):
        self.write_v1()
        db = sqlite3.connect(self.path)
        # a column the upgrade is about to add, there already: the step fails
        db.execute("ALTER TABLE clients ADD COLUMN last_seen REAL")
        db.commit()
        db.close()
        e = self.assertRaises(StoreError, MailboxStore.open, self.clock, self.path)
        self.assertIn(self.path, str(e))
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM version").fetchall(), [(1,)])
        self.assertEqual(db.execute("SELECT body FROM messages").fetchall(), [(b"kept",)])

    def test_newer_store_is_refused_not_read(self):
        MailboxStore.open(self.clock, self.path).close()
        db = sqlite3.connect(self.path)
        db.execute("UPDATE version SET version=?", (S.SCHEMA_VERSION + 1,))
        db.commit()
        db.close()
        e = self.assertRaises(StoreError, MailboxStore.open, self.clock, self.path)
        self.assertIn("written by a newer nymtx", str(e))
        self.assertIn(f"up to {S.SCHEMA_VERSION}", str(e))

    def test_empty_or_doubled_version_table_is_refused(self):
        for rows in ([], [(2,), (2,)], [("two",)]):
            path = self.mktemp()
            db = sqlite3.connect(path)
            db.execute("CREATE TABLE version (version)")
            db.executemany("INSERT INTO version VALUES (?)", rows)
            db.commit()
            db.close()
            e = self.assertRaises(StoreError, MailboxStore.open, self.clock, path)
            self.assertIn("damaged version table", str(e))


class Expiry(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = MailboxStore.open(self.clock, ":memory:")
        self.addCleanup(self.store.db.close)

    def test_idle_registrations_expire_with_their_mail_and_free_their_place(self):
        store = MailboxStore.open(self.clock, ":memory:", max_clients=2)
        self.addCleanup(store.db.close)
        store.register(ALICE, b"t" * 32)
        store.register(BOB, b"u" * 32)
        store.add(ALICE, b"for alice")
        store.flush()
        self.assertFalse(store.has_room(b"c" * 32))
        self.clock.advance(50)
        store.touch(BOB)
        self.clock.advance(50)
        self.assertEqual(store.expire_idle(100), [ALICE])
        self.assertEqual(store.registered_clients(), [BOB])
        self.assertEqual(store.pull(ALICE, 10), [])
        self.assertEqual(store.usage(ALICE), (0, 0))
        self.assertTrue(store.has_room(b"c" * 32))
        self.assertEqual(store.expire_idle(100), [])
        self.clock.advance(50)
        self.assertEqual(store.expire_idle(100), [BOB])

    def test_buffered_mail_of_a_live_client_survives_expiry(self):
        self.store.register(ALICE, b"t" * 32)
        self.store.register(BOB, b"u" * 32)
        self.clock.advance(10)
        self.store.touch(BOB)
        self.store.add(BOB, b"pending")
        self.store.expire_idle(5)
        self.assertEqual([m for _, m in self.store.pull(BOB, 10)], [b"pending"])


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


class AckCommits(SynchronousTestCase):
    """Acks are deleted at once and committed together at the end of the turn."""

    def setUp(self):
        self.clock = Clock()
        self.path = self.mktemp()
        self.store = MailboxStore.open(self.clock, self.path)
        self.addCleanup(self.store.close)
        self.store.register(ALICE, b"t" * 32)
        for m in (b"1", b"2", b"3"):
            self.store.add(ALICE, m)
        self.store.flush()
        self.ids = [i for i, _ in self.store.pull(ALICE, 10)]

    def on_disk(self):
        import sqlite3
        db = sqlite3.connect(self.path)
        try:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        finally:
            db.close()

    def test_one_commit_per_turn(self):
        self.assertEqual(self.store.ack(ALICE, self.ids[:1]), 1)
        self.assertEqual(self.store.ack(ALICE, self.ids[1:2]), 1)
        # deleted for this connection at once, on disk at the end of the turn
        self.assertEqual([i for i, _ in self.store.pull(ALICE, 10)], self.ids[2:])
        self.assertEqual(self.on_disk(), 3)
        self.clock.advance(0)
        self.assertEqual(self.on_disk(), 1)
        self.assertEqual(self.store.usage(ALICE), (1, 1))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_other_writes_commit_the_open_acks_first(self):
        self.store.ack(ALICE, self.ids[:1])
        self.store.register(BOB, b"u" * 32)
        self.assertEqual(self.on_disk(), 2)
        self.store.ack(ALICE, self.ids[1:2])
        self.store.add(ALICE, b"4")
        self.store.flush()
        self.assertEqual(self.on_disk(), 2)
        self.store.ack(ALICE, self.ids[2:])
        self.store.expire_idle(10**9)
        self.assertEqual(self.on_disk(), 1)
        self.store.close()
        self.assertEqual(self.on_disk(), 1)

    def test_a_failed_commit_puts_the_messages_and_their_quota_back(self):
        self.store.ack(ALICE, self.ids)
        self.assertEqual(self.store.usage(ALICE), (0, 0))
        real = self.store.db

        class DiskFull:
            in_transaction = property(lambda self: real.in_transaction)

            def execute(self, sql, *args):
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real.execute(sql, *args)
        self.store.db = DiskFull()
        self.assertRaises(StoreError, self.store.commit_acks)
        self.store.db = real
        self.assertEqual(self.store.usage(ALICE), (3, 3))
        self.assertEqual([i for i, _ in self.store.pull(ALICE, 10)], self.ids)
