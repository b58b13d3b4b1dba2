"""Identity keys, signed presences, the directory's admission rules, the
allow list and the Sphinx key rotation schedule (nymtx.trust)."""

import json
import os
import stat

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.addressing import NodeAddress
from nymtx.directory import presence as seed_presence
from nymtx.keys import KeyFormatError, encode_key
from nymtx.trust.allowlist import AllowList, AllowListError
from nymtx.trust.book import PresenceBook
from nymtx.trust.identity import (
    PRIVATE_IDENTITY_FILE, PUBLIC_IDENTITY_FILE, IdentityKey, decode_b58, encode_b58,
    verify_signature)
from nymtx.trust.metrics import parse_signed_metrics, sign_metrics
from nymtx.trust.presence import (
    MAX_CLOCK_SKEW, NS, ROLE_GATEWAY, ROLE_MIXNODE, PresenceError, check_announced,
    clients_digest, is_current, make_presence, parse_signed_gateway, parse_signed_mixnode,
    sign_seed_presence)
from nymtx.trust.rotation import KeyPeriod, RotationSchedule

from tests.trustnet import T0, gateway, identity, mixnode, sphinx


def body(signed, **changes):
    data = signed.to_json()
    for field, value in changes.items():
        if value is None:
            data.pop(field, None)
        else:
            data[field] = value
    return json.dumps(data).encode()


class IdentityKeyTests(SynchronousTestCase):
    def setUp(self):
        self.dir = self.mktemp()

    def test_signs_and_verifies(self):
        key = IdentityKey.generate()
        sig = key.sign(b"hello")
        self.assertEqual(len(sig), 64)
        self.assertTrue(verify_signature(key.public_key, b"hello", sig))
        self.assertFalse(verify_signature(key.public_key, b"hellO", sig))
        self.assertFalse(verify_signature(IdentityKey.generate().public_key, b"hello", sig))

    def test_garbage_key_or_signature_verifies_nothing(self):
        self.assertFalse(verify_signature(bytes(32), b"x", bytes(64)))
        self.assertFalse(verify_signature(b"\xff" * 32, b"x", bytes(64)))
        self.assertFalse(verify_signature(bytes(31), b"x", bytes(64)))

    def test_files_round_trip_owner_only(self):
        key = IdentityKey.generate()
        key.save(self.dir)
        self.assertEqual(IdentityKey.load(self.dir), key)
        mode = stat.S_IMODE(os.stat(os.path.join(self.dir, PRIVATE_IDENTITY_FILE)).st_mode)
        self.assertEqual(mode, 0o600)
        with open(os.path.join(self.dir, PUBLIC_IDENTITY_FILE)) as f:
            self.assertEqual(f.read(), key.public_text + "\n")

    def test_no_leftover_tmp_and_load_or_generate_keeps_the_key(self):
        first = IdentityKey.load_or_generate(self.dir)
        self.assertEqual(IdentityKey.load_or_generate(self.dir), first)
        self.assertEqual(sorted(os.listdir(self.dir)),
                         [PRIVATE_IDENTITY_FILE, PUBLIC_IDENTITY_FILE])

    def test_mismatched_public_file_refused(self):
        IdentityKey.generate().save(self.dir)
        with open(os.path.join(self.dir, PUBLIC_IDENTITY_FILE), "w") as f:
            f.write(IdentityKey.generate().public_text)
        self.assertRaises(KeyFormatError, IdentityKey.load, self.dir)

    def test_bad_private_files_are_key_format_errors(self):
        os.makedirs(self.dir)
        path = os.path.join(self.dir, PRIVATE_IDENTITY_FILE)
        for content in (b"", b"\xff\xfe", b"0OIl", encode_b58(bytes(31)).encode()):
            with open(path, "wb") as f:
                f.write(content)
            self.assertRaises(KeyFormatError, IdentityKey.load, self.dir)
        os.unlink(path)
        self.assertRaises(KeyFormatError, IdentityKey.load, self.dir)

    def test_repr_hides_the_seed(self):
        key = IdentityKey.from_seed(b"\x09" * 32)
        self.assertNotIn(encode_b58(key.seed), repr(key))
        self.assertIn(key.public_text, repr(key))

    @given(st.binary(max_size=200))
    def test_fuzz_private_file(self, data):
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.dir, PRIVATE_IDENTITY_FILE), "wb") as f:
            f.write(data)
        try:
            key = IdentityKey.load(self.dir)
        except KeyFormatError:
            return
        self.assertEqual(len(key.public_key), 32)

    def test_long_text_is_refused_before_decoding(self):
        with self.assertRaises(KeyFormatError) as e:
            decode_b58("1" * 45, 32, "key")
        self.assertIn("at most 44", str(e.exception))
        self.assertEqual(decode_b58(encode_b58(b"\xff" * 32), 32, "key"), b"\xff" * 32)

    @given(st.text(max_size=120))
    def test_decode_b58_text(self, text):
        try:
            raw = decode_b58(text, 32, "key")
        except KeyFormatError:
            return
        self.assertEqual(len(raw), 32)


class SignedPresenceTests(SynchronousTestCase):
    def setUp(self):
        self.mix = mixnode(1, 2).presence(T0)
        self.gw = gateway(2, [sphinx(7), sphinx(8)]).presence(T0)

    def test_round_trip(self):
        self.assertEqual(parse_signed_mixnode(body(self.mix)), self.mix)
        self.assertEqual(parse_signed_gateway(body(self.gw)), self.gw)
        self.assertEqual(parse_signed_gateway(self.gw.to_json()), self.gw)

    def test_seed_parsers_still_read_a_signed_presence(self):
        entry = seed_presence.parse_mixnode(body(self.mix))
        self.assertEqual(entry["pubKey"], encode_key(self.mix.presence.sphinx_key))
        self.assertEqual(entry["layer"], 2)
        entry = seed_presence.parse_gateway(body(self.gw))
        self.assertEqual(entry["clientListener"], "127.0.0.1:6002")
        self.assertEqual(len(entry["registeredClients"]), 2)

    def test_compact_gateway_leaves_clients_out(self):
        compact = parse_signed_gateway(json.dumps(self.gw.to_json(with_clients=False)).encode())
        self.assertIsNone(compact.clients)
        self.assertEqual(compact.presence, self.gw.presence)
        self.assertTrue(compact.verify())

    def refused(self, parse, data, field, text):
        with self.assertRaises(PresenceError) as e:
            parse(data)
        self.assertEqual(e.exception.field, field)
        self.assertIn(text, str(e.exception))

    def test_unsigned_refused(self):
        self.refused(parse_signed_mixnode, body(self.mix, signature=None), "signature",
                     "not signed")
        # the seed's own presence, with no trust fields at all
        seed = json.dumps({"host": "127.0.0.1:1", "pubKey": encode_key(sphinx(1)),
                           "layer": 1, "version": "0.5.0"}).encode()
        self.refused(parse_signed_mixnode, seed, "signature", "not signed")

    def test_signed_by_another_key_refused(self):
        forged = mixnode(1, 2).presence(T0, signer=identity(99))
        # make_presence names the signer's key: claim the node's instead
        data = forged.to_json()
        data["identityKey"] = encode_b58(identity(1).public_key)
        self.refused(parse_signed_mixnode, json.dumps(data).encode(), "signature",
                     "does not verify")

    def test_signature_over_different_bytes_refused(self):
        other = NodeAddress.parse("10.0.0.1:1789")
        for field, value in [("host", str(other)), ("layer", 3), ("version", "0.6.0"),
                             ("location", "elsewhere"), ("timestamp", T0 + 1),
                             ("expires", T0 + 10 * NS), ("pubKey", encode_key(sphinx(5))),
                             ("nextPubKey", encode_key(sphinx(6)))]:
            data = body(self.mix, **{field: value})
            if field == "nextPubKey":
                data = body(self.mix, nextPubKey=value, nextPubKeyFrom=T0 + NS)
            self.refused(parse_signed_mixnode, data, "signature", "does not verify")
        for field, value in [("clientListener", "127.0.0.1:1"),
                             ("clientsDigest", encode_b58(clients_digest([]))),
                             ("clientsCount", 3)]:
            data = body(self.gw, **{field: value, "registeredClients": None})
            self.refused(parse_signed_gateway, data, "signature", "does not verify")

    def test_client_list_must_match_the_signed_digest(self):
        # a directory adding Bob to a gateway's list
        clients = self.gw.to_json()["registeredClients"] + [{"pubKey": encode_key(sphinx(9))}]
        self.refused(parse_signed_gateway, body(self.gw, registeredClients=clients),
                     "registeredClients", "do not match")
        self.refused(parse_signed_gateway, body(self.gw, registeredClients=clients[:1]),
                     "registeredClients", "do not match")

    def test_field_rules(self):
        self.refused(parse_signed_mixnode, body(self.mix, identityKey=None), "identityKey",
                     "missing")
        self.refused(parse_signed_mixnode, body(self.mix, identityKey="0OIl"),
                     "identityKey", "not base58")
        self.refused(parse_signed_mixnode, body(self.mix, timestamp="1"), "timestamp",
                     "integer")
        self.refused(parse_signed_mixnode, body(self.mix, timestamp=-1), "timestamp",
                     "out of range")
        self.refused(parse_signed_mixnode, body(self.mix, expires=T0), "expires", "after")
        self.refused(parse_signed_mixnode, body(self.mix, expires=T0 + 601 * NS), "expires",
                     "at most 600 s")
        self.refused(parse_signed_mixnode, body(self.mix, nextPubKeyFrom=T0), "nextPubKey",
                     "go together")
        self.refused(parse_signed_mixnode,
                     body(self.mix, nextPubKey=encode_key(self.mix.presence.sphinx_key),
                          nextPubKeyFrom=T0), "nextPubKey", "current")
        self.refused(parse_signed_mixnode, body(self.mix, layer=4), "layer", "not a layer")
        self.refused(parse_signed_mixnode, body(self.mix, signature="abc"), "signature",
                     "bytes")
        self.refused(parse_signed_gateway, body(self.gw, clientsCount=2 ** 32),
                     "clientsCount", "out of range")
        self.refused(parse_signed_mixnode, b"[1]", None, "JSON object")

    def test_announce_time_rules(self):
        p = self.mix.presence
        check_announced(p, T0)
        check_announced(p, T0 + MAX_CLOCK_SKEW)
        check_announced(p, T0 - MAX_CLOCK_SKEW)
        with self.assertRaises(PresenceError) as e:
            check_announced(p, T0 - MAX_CLOCK_SKEW - 1)
        self.assertIn("in the future", str(e.exception))
        with self.assertRaises(PresenceError) as e:
            check_announced(p, T0 + MAX_CLOCK_SKEW + 1)
        self.assertIn("stale", str(e.exception))
        short = mixnode(1, 2).presence(T0, lifetime=10 * NS).presence
        with self.assertRaises(PresenceError) as e:
            check_announced(short, T0 + 10 * NS)
        self.assertIn("expired", str(e.exception))
        self.assertTrue(is_current(p, T0 + 299 * NS))
        self.assertFalse(is_current(p, T0 + 300 * NS))
        self.assertFalse(is_current(p, T0 - MAX_CLOCK_SKEW - 1))

    def test_sphinx_key_at(self):
        p = mixnode(1, 1).presence(T0, next_sphinx_key=sphinx(5), next_key_from=T0 + NS)
        self.assertEqual(p.presence.sphinx_key_at(T0), sphinx(1))
        self.assertEqual(p.presence.sphinx_key_at(T0 + NS), sphinx(5))
        self.assertEqual(p.presence.sphinx_keys(), (sphinx(1), sphinx(5)))
        self.assertEqual(parse_signed_mixnode(body(p)), p)

    def test_signing_with_the_wrong_identity_is_a_programming_error(self):
        self.assertRaises(ValueError, self.mix.presence.sign, identity(5))

    @given(st.binary(max_size=400))
    def test_fuzz_bytes(self, data):
        for parse in (parse_signed_mixnode, parse_signed_gateway):
            try:
                parse(data)
            except PresenceError:
                pass

    @given(st.data())
    def test_fuzz_fields(self, data):
        # a valid presence with fields replaced by arbitrary JSON values
        values = st.recursive(
            st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.text(max_size=50),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                st.text(max_size=10), inner, max_size=3), max_leaves=5)
        for signed, parse in ((self.mix, parse_signed_mixnode),
                              (self.gw, parse_signed_gateway)):
            doc = signed.to_json()
            for field in data.draw(st.lists(st.sampled_from(sorted(doc) + ["nextPubKey",
                                                                           "nextPubKeyFrom"]),
                                            min_size=1, max_size=3)):
                doc[field] = data.draw(values)
            try:
                result = parse(json.dumps(doc).encode())
            except PresenceError:
                continue
            self.assertTrue(result.verify())


class PresenceBookTests(SynchronousTestCase):
    def setUp(self):
        self.book = PresenceBook()
        self.mix = mixnode(1, 1)
        self.gw = gateway(2)

    def refused(self, signed, text, now=T0):
        with self.assertRaises(PresenceError) as e:
            self.book.admit(signed, now)
        self.assertIn(text, str(e.exception))

    def test_admits_and_replaces(self):
        self.book.admit(self.mix.presence(T0), T0)
        newer = self.mix.presence(T0 + NS)
        self.book.admit(newer, T0 + NS)
        self.assertEqual(self.book.get(identity(1).public_key), newer)
        self.assertEqual(len(self.book), 1)

    def test_replay_refused(self):
        first = self.mix.presence(T0)
        self.book.admit(first, T0)
        self.book.admit(self.mix.presence(T0 + 2), T0)
        self.refused(first, "replay")
        self.refused(self.mix.presence(T0 + 2), "replay")
        # still refused once the node has expired and been forgotten
        self.book.forget(identity(1).public_key)
        self.refused(first, "replay")

    def test_stale_and_future_refused(self):
        self.refused(self.mix.presence(T0 - MAX_CLOCK_SKEW - 1), "stale")
        self.refused(self.mix.presence(T0 + MAX_CLOCK_SKEW + 1), "future")

    def test_sphinx_key_of_another_identity_refused(self):
        self.book.admit(self.mix.presence(T0), T0)
        thief = mixnode(3, 2)
        self.refused(thief.presence(T0, sphinx_key=sphinx(1)), "held by another identity")
        # announced as the next key too
        self.refused(thief.presence(T0, next_sphinx_key=sphinx(1), next_key_from=T0 + NS),
                     "held by another identity")

    def test_mixnode_carrying_a_gateways_key_refused(self):
        self.book.admit(self.gw.presence(T0), T0)
        self.refused(mixnode(3, 2).presence(T0, sphinx_key=sphinx(2)), "pubKey: Sphinx key")

    def test_host_of_another_identity_refused(self):
        self.book.admit(self.gw.presence(T0), T0)
        self.refused(mixnode(3, 2).presence(T0, host=self.gw.host), "host: 127.0.0.1:1002")
        # a gateway's client listener is held as well
        self.refused(mixnode(3, 2).presence(T0, host=self.gw.client_listener),
                     "is held by another identity")

    def test_forget_frees_keys_and_hosts(self):
        self.book.admit(self.gw.presence(T0), T0)
        self.book.forget(identity(2).public_key)
        self.book.admit(mixnode(3, 2).presence(T0, sphinx_key=sphinx(2), host=self.gw.host),
                        T0)

    def test_a_node_may_rotate_and_move(self):
        self.book.admit(self.mix.presence(T0), T0)
        self.book.admit(self.mix.presence(T0 + 1, sphinx_key=sphinx(8), host="127.0.0.1:7"),
                        T0)
        # the old key and host are free for others
        self.book.admit(mixnode(3, 2).presence(T0, sphinx_key=sphinx(1), host=self.mix.host),
                        T0)

    def test_allow_list(self):
        self.book.allowed = AllowList({identity(1).public_key: "mix-1"})
        self.book.admit(self.mix.presence(T0), T0)
        self.refused(self.gw.presence(T0), "not on the directory's allow list")

    def test_refusal_changes_nothing(self):
        self.book.admit(self.mix.presence(T0), T0)
        before = self.book.get(identity(1).public_key)
        self.refused(self.mix.presence(T0), "replay")
        self.assertEqual(self.book.get(identity(1).public_key), before)

    def test_replay_memory_is_bounded(self):
        for n in range(200):
            node = mixnode(100 + n, 1)
            self.book.admit(node.presence(T0), T0)
            self.book.forget(node.identity.public_key)
        self.book.admit(self.mix.presence(T0 + 2 * MAX_CLOCK_SKEW), T0 + 2 * MAX_CLOCK_SKEW)
        self.assertLess(len(self.book._last), 100)


class AllowListTests(SynchronousTestCase):
    def test_parse(self):
        a, b = identity(1).public_text, identity(2).public_text
        text = f"# operators\n\n{a} mix-1 (Alice)\n  {b}\t# no label\n{a} again\n"
        allowed = AllowList.parse(text)
        self.assertEqual(allowed.labels, {identity(1).public_key: "mix-1 (Alice)",
                                          identity(2).public_key: ""})
        self.assertIn(identity(2).public_key, allowed)
        self.assertNotIn(identity(3).public_key, allowed)
        self.assertEqual(AllowList.parse(allowed.render()), allowed)

    def test_errors_name_the_line(self):
        for text, why in [("\n\nnot-a-key\n", "line 3"), (b"\xff", "not UTF-8"),
                          (identity(1).public_text + " a\x07b", "line 1: the label"),
                          ("x" * (1024 * 1024 + 1), "the limit")]:
            with self.assertRaises(AllowListError) as e:
                AllowList.parse(text)
            self.assertIn(why, str(e.exception))

    def test_load(self):
        path = self.mktemp()
        self.assertRaises(AllowListError, AllowList.load, path)
        with open(path, "w") as f:
            f.write(identity(1).public_text + "\n")
        self.assertIn(identity(1).public_key, AllowList.load(path))

    @given(st.binary(max_size=300))
    def test_fuzz(self, data):
        try:
            allowed = AllowList.parse(data)
        except AllowListError:
            return
        self.assertEqual(AllowList.parse(allowed.render()), allowed)

    @given(st.lists(st.tuples(st.integers(1, 50), st.text(max_size=20).filter(
        lambda t: t.isprintable() and "#" not in t)), max_size=10))
    def test_render_round_trip(self, entries):
        labels = {}
        for n, label in entries:
            labels.setdefault(identity(n).public_key, label.strip())
        allowed = AllowList(labels)
        self.assertEqual(AllowList.parse(allowed.render()), allowed)


class RotationTests(SynchronousTestCase):
    def setUp(self):
        self.k1, self.k2, self.k3 = sphinx(1), sphinx(2), sphinx(3)
        self.schedule = RotationSchedule([KeyPeriod(self.k1, 0)], overlap=100)

    def test_one_key(self):
        self.assertEqual(self.schedule.in_use(5), self.k1)
        self.assertEqual(self.schedule.announced(5), (None, 0))
        self.assertEqual(self.schedule.accepted(5), [self.k1])
        self.assertEqual(self.schedule.retired(5), [])

    def test_overlap(self):
        s = self.schedule.rotate(self.k2, 1000).rotate(self.k3, 2000)
        # before the switch: the next key is announced and already accepted
        self.assertEqual(s.in_use(999), self.k1)
        self.assertEqual(s.announced(999), (self.k2, 1000))
        self.assertEqual(s.accepted(999), [self.k1, self.k2])
        # after: senders use the new key, the old one is accepted for overlap
        self.assertEqual(s.in_use(1000), self.k2)
        self.assertEqual(s.announced(1000), (self.k3, 2000))
        self.assertEqual(s.accepted(1099), [self.k2, self.k3, self.k1])
        self.assertEqual(s.accepted(1100), [self.k2, self.k3])
        self.assertEqual(s.retired(1100), [self.k1])
        self.assertEqual(s.accepted(2050), [self.k3, self.k2])
        self.assertEqual(s.retired(2100), [self.k1, self.k2])

    def test_a_presence_announces_the_schedule(self):
        s = self.schedule.rotate(self.k2, T0 + 10)
        key, start = s.announced(T0)
        p = make_presence(identity(1), ROLE_MIXNODE, s.in_use(T0), "127.0.0.1:1", T0, "v",
                          layer=1, next_sphinx_key=key, next_key_from=start).presence
        for t in (T0, T0 + 10, T0 + 50):
            self.assertEqual(p.sphinx_key_at(t), s.in_use(t))
            self.assertIn(p.sphinx_key_at(t), s.accepted(t))

    def test_bad_schedules(self):
        self.assertRaises(ValueError, RotationSchedule, [])
        self.assertRaises(ValueError, self.schedule.rotate, self.k2, 0)
        self.assertRaises(ValueError, self.schedule.rotate, self.k1, 10)


class SignSeedPresenceTests(SynchronousTestCase):
    """What the nodes will call on the presence dicts they build today."""

    def test_a_gateways_dict(self):
        seed = {"host": "127.0.0.1:1790", "mixnetListener": "127.0.0.1:1790",
                "clientListener": "127.0.0.1:9000", "pubKey": encode_key(sphinx(2)),
                "registeredClients": [{"pubKey": encode_key(sphinx(7))}],
                "version": "0.5.0", "location": "here"}
        signed = sign_seed_presence(identity(2), ROLE_GATEWAY, seed, T0)
        again = parse_signed_gateway(json.dumps(signed.to_json()).encode())
        self.assertEqual(again, signed)
        self.assertEqual(again.clients, (sphinx(7),))
        self.assertEqual(str(again.presence.client_listener), "127.0.0.1:9000")
        self.assertEqual(again.presence.location, "here")

    def test_a_mixnodes_dict(self):
        seed = {"host": "[::1]:1789", "pubKey": encode_key(sphinx(1)), "layer": 3,
                "version": "0.5.0"}
        signed = sign_seed_presence(identity(1), ROLE_MIXNODE, seed, T0,
                                    next_sphinx_key=sphinx(5), next_key_from=T0 + NS)
        self.assertEqual(parse_signed_mixnode(signed.to_json()), signed)
        self.assertEqual(signed.presence.layer, 3)

    def test_a_bad_dict_is_refused_before_signing(self):
        with self.assertRaises(PresenceError) as e:
            sign_seed_presence(identity(1), ROLE_MIXNODE, {"host": "x"}, T0)
        self.assertEqual(e.exception.field, "host")


class MakePresenceTests(SynchronousTestCase):
    def test_gateway_clients_are_sorted_and_distinct(self):
        g = make_presence(identity(1), ROLE_GATEWAY, sphinx(1), "127.0.0.1:1", T0, "v",
                          client_listener="127.0.0.1:2",
                          clients=[sphinx(3), sphinx(2), sphinx(3)])
        self.assertEqual(g.clients, tuple(sorted({sphinx(2), sphinx(3)})))
        self.assertEqual(g.presence.clients_count, 2)
        self.assertEqual(g.presence.clients_digest, clients_digest([sphinx(2), sphinx(3)]))


class SignedMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.signed = sign_metrics(identity(1), sphinx(1), {
            "received": 5, "sent": 4, "dropped": {"b": 1, "a": 2, "é": 3}}, T0)

    def test_round_trip_and_reason_order(self):
        self.assertEqual(parse_signed_metrics(json.dumps(self.signed.to_json()).encode()),
                         self.signed)
        self.assertEqual([r for r, _ in self.signed.metrics.dropped], ["a", "b", "é"])

    def test_refusals(self):
        for field, value, text in [("signature", None, "not signed"),
                                   ("received", 6, "does not verify"),
                                   ("dropped", {"a": 2}, "does not verify"),
                                   ("timestamp", None, "timestamp: missing"),
                                   ("identityKey", "x", "identityKey"),
                                   ("sent", {"127.0.0.1:1": 4}, "the total")]:
            data = self.signed.to_json()
            if value is None:
                del data[field]
            else:
                data[field] = value
            with self.assertRaises(PresenceError) as e:
                parse_signed_metrics(json.dumps(data).encode())
            self.assertIn(text, str(e.exception))

    @given(st.binary(max_size=300))
    def test_fuzz_bytes(self, data):
        try:
            parse_signed_metrics(data)
        except PresenceError:
            pass

    @given(st.data())
    def test_fuzz_fields(self, data):
        doc = self.signed.to_json()
        doc[data.draw(st.sampled_from(sorted(doc)))] = data.draw(st.one_of(
            st.none(), st.integers(-1, 2 ** 65), st.text(max_size=30),
            st.dictionaries(st.text(max_size=5), st.integers(-1, 3), max_size=3)))
        try:
            parse_signed_metrics(json.dumps(doc).encode())
        except PresenceError:
            pass
