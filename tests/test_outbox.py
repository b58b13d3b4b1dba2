"""The durable send queue and the reply-block store, on real sqlite files."""

import os
import random
import sqlite3
import subprocess
import sys
import textwrap

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from nymtx.client.outbox import SCHEMA_VERSION, Outbox, OutboxError, OutboxFull
from nymtx.client.replystore import ReplyStore
from nymtx.reliable import replies
from nymtx.reliable.retransmit import DELIVERED, Retransmitter, Retry

from tests.test_reliable import Network

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OutboxTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1000)

    def open(self, **kw):
        box = Outbox.open(self.path, self.clock, **kw)
        self.addCleanup(box.close)
        return box

    def test_add_ack_remove(self):
        box = self.open()
        n = box.add("m1", b"R" * 32, b"hello", 1, 3)
        self.assertEqual(len(box), 1)
        self.assertFalse(box.mark_acked(n, 0))
        self.assertFalse(box.mark_acked(n, 0))  # again: still not all
        self.assertFalse(box.mark_acked(n, 2))
        self.assertTrue(box.mark_acked(n, 1))
        self.assertIsNone(box.mark_acked(n, 9))
        p = box.get(n)
        self.assertEqual(p.acked, {0, 1, 2})
        box.remove(n)
        self.assertEqual(box.pending(), [])
        self.assertIsNone(box.mark_acked(n, 0))

    def test_survives_reopen(self):
        box = self.open()
        n = box.add("m1", b"R" * 32, b"body one", 2, 4, reply_tag=b"t" * 16, reply_surbs=5)
        box.mark_acked(n, 1)
        box.sent(n, 0)
        box.sent(n, 0)
        key = box.ack_key
        box.close()
        again = Outbox.open(self.path, self.clock)
        self.addCleanup(again.close)
        self.assertEqual(again.ack_key, key)
        [p] = again.pending()
        self.assertEqual((p.number, p.id, p.recipient, p.kind, p.body, p.fragments),
                         (n, "m1", b"R" * 32, 2, b"body one", 4))
        self.assertEqual(p.acked, {1})
        self.assertEqual(p.attempts, {0: 2, 2: 0, 3: 0})
        self.assertEqual((p.reply_tag, p.reply_surbs), (b"t" * 16, 5))

    def test_numbers_never_reused(self):
        box = self.open()
        a = box.add("a", b"R", b"x", 1, 1)
        box.remove(a)
        b = box.add("b", b"R", b"x", 1, 1)
        self.assertGreater(b, a)
        box.close()
        c = self.open().add("c", b"R", b"x", 1, 1)
        self.assertGreater(c, b)

    def test_bounds(self):
        box = self.open(max_messages=2, max_bytes=100)
        box.add("a", b"R", b"x" * 60, 1, 1)
        e = self.assertRaises(OutboxFull, box.add, "b", b"R", b"x" * 50, 1, 1)
        self.assertIn("100", str(e))
        box.add("b", b"R", b"x" * 40, 1, 1)
        e = self.assertRaises(OutboxFull, box.add, "c", b"R", b"", 1, 1)
        self.assertIn("2 messages", str(e))
        self.assertRaises(OutboxFull, self.open(max_bytes=10).add, "big", b"R", b"x" * 11, 1, 1)
        self.assertEqual(len(box), 2)
        self.assertEqual(box.size(), 100)

    def test_bad_calls(self):
        box = self.open()
        box.add("a", b"R", b"x", 1, 1)
        self.assertRaises(OutboxError, box.add, "a", b"R", b"y", 1, 1)
        self.assertRaises(OutboxError, box.add, "", b"R", b"y", 1, 1)
        self.assertRaises(OutboxError, box.add, "b", b"R", "text", 1, 1)
        self.assertRaises(OutboxError, box.add, "b", b"R", b"y", 1, 0)
        self.assertRaises(OutboxError, box.add, "b", "R", b"y", 1, 1)
        self.assertRaises(OutboxError, box.add, "b", b"R", b"y", 256, 1)
        self.assertEqual(len(box), 1)

    def test_not_an_outbox(self):
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE something (x)")
        db.commit()
        db.close()
        e = self.assertRaises(OutboxError, Outbox.open, self.path, self.clock)
        self.assertIn("not a nymtx client outbox", str(e))

    def test_newer_schema_refused(self):
        self.open().close()
        db = sqlite3.connect(self.path)
        db.execute("UPDATE version SET version = ?", (SCHEMA_VERSION + 1,))
        db.commit()
        db.close()
        e = self.assertRaises(OutboxError, Outbox.open, self.path, self.clock)
        self.assertIn("newer nymtx", str(e))

    def test_unreadable_path(self):
        self.assertRaises(OutboxError, Outbox.open, os.path.join(self.mktemp(), "no", "x.db"),
                          self.clock)

    def test_restart_hands_the_retransmitter_what_is_left(self):
        box = self.open()
        n = box.add("m", b"R" * 32, b"z", 2, 3)
        box.sent(n, 0)
        box.sent(n, 1)
        box.mark_acked(n, 1)
        box.close()
        outcomes = []
        r = Retransmitter(self.clock, lambda m, o: outcomes.append((m, o)))
        again = self.open()
        for p in again.pending():
            r.track(p.number, p.fragments, acked=p.acked, attempts=p.attempts)
        self.assertEqual(r.due(), [Retry(n, 0, 1), Retry(n, 2, 0)])
        for retry in r.due():
            r.sent(retry.message, retry.index, 0.1)
            again.sent(retry.message, retry.index)
        for i in (0, 2):
            r.acked(n, i)
            again.mark_acked(n, i)
        self.assertEqual(outcomes, [(n, DELIVERED)])
        again.remove(n)
        self.assertEqual(again.pending(), [])


CRASH = textwrap.dedent("""
    import os, sys
    from twisted.internet.task import Clock
    from nymtx.client.outbox import Outbox
    box = Outbox.open(sys.argv[1], Clock())
    step = sys.argv[2]
    n = box.add("first", b"R" * 32, b"one", 1, 3)
    box.mark_acked(n, 0)
    if step == "after-ack":
        os._exit(9)
    # a transaction the process dies inside: begun, written, never committed
    box.db.execute("BEGIN IMMEDIATE")
    box.db.execute("UPDATE outbox_fragments SET acked = 1 WHERE number = ?", (n,))
    box.db.execute("DELETE FROM outbox WHERE number = ?", (n,))
    os._exit(9)
""")


class CrashTests(TestCase):
    """A process killed between calls, or inside one, loses nothing that a
    call returned, and keeps nothing half done."""

    def crash(self, step):
        path = os.path.abspath(self.mktemp())
        env = dict(os.environ, PYTHONPATH=ROOT)
        rc = subprocess.call([sys.executable, "-c", CRASH, path, step], env=env, cwd=ROOT)
        self.assertEqual(rc, 9)
        box = Outbox.open(path, Clock())
        self.addCleanup(box.close)
        return box

    def test_between_steps(self):
        box = self.crash("after-ack")
        [p] = box.pending()
        self.assertEqual((p.id, p.body, p.acked), ("first", b"one", {0}))

    def test_inside_a_transaction(self):
        box = self.crash("inside")
        [p] = box.pending()
        self.assertEqual(p.acked, {0})  # the uncommitted ack and delete are gone


class ReplyStoreTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1000)
        self.net = Network(2)
        self.rng = random.Random(3)

    def open(self, **kw):
        store = ReplyStore.open(self.path, self.clock, **kw)
        self.addCleanup(store.close)
        return store

    def made(self, n, expires_at=5000):
        return replies.build_reply_surbs(n, lambda: self.net.to_a, self.net.alice.public_key,
                                         expires_at, lambda k: [0] * k,
                                         randbytes=self.rng.randbytes)

    def test_take_each_once_soonest_expiry_first(self):
        store = self.open()
        tag = b"a" * 16
        later = self.made(2, 9000)
        sooner = self.made(1, 3000)
        self.assertEqual(store.add(tag, [s for s, _ in later + sooner]), 3)
        self.assertEqual(store.count(tag), 3)
        self.assertEqual(store.take(tag), sooner[0][0])
        got = {store.take(tag), store.take(tag)}
        self.assertEqual(got, {s for s, _ in later})
        self.assertIsNone(store.take(tag))

    def test_expiry(self):
        store = self.open()
        tag = b"b" * 16
        store.add(tag, [s for s, _ in self.made(2, 1500) + self.made(1, 2500)])
        self.assertEqual(store.add(tag, [s for s, _ in self.made(1, 999)]), 0)  # already expired
        self.clock.advance(600)
        self.assertEqual(store.count(tag), 1)
        self.assertEqual(store.take(tag).expires_at, 2500)
        self.clock.advance(1000)
        self.assertEqual(store.expire(), 0)

    def test_durable_and_bounded(self):
        store = self.open(max_per_tag=3, max_tags=1)
        tag = b"c" * 16
        self.assertEqual(store.add(tag, [s for s, _ in self.made(5)]), 3)
        self.assertEqual(store.add(b"d" * 16, [s for s, _ in self.made(1)]), 0)  # tag bound
        store.close()
        again = self.open(max_per_tag=3, max_tags=1)
        self.assertEqual(again.count(tag), 3)

    def test_asks_for_more_when_low(self):
        store = self.open(low_water=3, request=20, max_per_tag=10)
        tag = b"e" * 16
        self.assertEqual(store.wanted(tag), 0)  # none left to ask with
        store.add(tag, [s for s, _ in self.made(2)])
        self.assertEqual(store.wanted(tag), 9)  # up to the bound, counting the one spent
        store.add(tag, [s for s, _ in self.made(1)])
        self.assertEqual(store.wanted(tag), 0)

    def test_builder_keys_open_once(self):
        store = self.open()
        (surb, keys), = self.made(1, 4000)
        store.remember(keys, b"f" * 16, 4000)
        store.close()
        again = self.open()
        self.assertEqual(again.claim(keys.identifier), (b"f" * 16, keys))
        self.assertIsNone(again.claim(keys.identifier))
        self.assertIsNone(again.claim(os.urandom(16)))

    def test_builder_keys_expire(self):
        store = self.open(max_keys=2)
        made = self.made(3, 1500)
        for i, (_, keys) in enumerate(made):
            store.remember(keys, b"g" * 16, 1200 + 300 * min(i, 1))
        self.assertIsNone(store.claim(made[0][1].identifier))  # over max_keys: forgotten
        self.clock.advance(600)
        self.assertIsNone(store.claim(made[1][1].identifier))

    def test_sender_tag_per_recipient(self):
        store = self.open()
        t1 = store.sender_tag(b"B" * 32)
        self.assertEqual(len(t1), 16)
        self.assertEqual(store.sender_tag(b"B" * 32), t1)
        self.assertNotEqual(store.sender_tag(b"C" * 32), t1)
        store.close()
        self.assertEqual(self.open().sender_tag(b"B" * 32), t1)

    def test_same_file_as_the_outbox(self):
        box = Outbox.open(self.path, self.clock)
        self.addCleanup(box.close)
        box.add("m", b"R", b"x", 1, 1)
        store = self.open()
        store.add(b"h" * 16, [s for s, _ in self.made(1)])
        self.assertEqual(len(box), 1)
        self.assertEqual(store.count(b"h" * 16), 1)

    def test_damaged_row_skipped(self):
        store = self.open()
        tag = b"i" * 16
        store.add(tag, [s for s, _ in self.made(1, 4000) + self.made(1, 4500)])
        store.db.execute("UPDATE reply_surbs SET surb = x'00' WHERE expires_at = 4000")
        self.assertEqual(store.take(tag).expires_at, 4500)
        self.assertEqual(store.count(tag), 0)

    def test_bad_tag(self):
        store = self.open()
        self.assertRaises(OutboxError, store.add, b"short", [])
        self.assertRaises(OutboxError, store.take, "text" * 4)
