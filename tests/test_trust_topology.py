"""Signed topology documents, pinned directories, and the threshold merge:
one lying directory cannot change what a client routes on (nymtx.trust)."""

import json
import random

import attrs

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from nymtx.keys import encode_key
from nymtx.topology import Topology
from nymtx.trust.agreement import NoAgreement, TrustedDirectories, merge
from nymtx.trust.document import DocumentError, next_serial, parse_document
from nymtx.trust.presence import MAX_CLOCK_SKEW, NS

from tests.trustnet import T0, document, gateway, identity, mixnode, network, sphinx

A, B, C, L = identity(501), identity(502), identity(503), identity(666)


def fresh(nodes, t):
    return [n.presence(t) for n in nodes]


class DocumentTests(SynchronousTestCase):
    def setUp(self):
        self.nodes = network()
        self.doc = document(A, 1, T0, fresh(self.nodes, T0))

    def test_round_trip(self):
        parsed = parse_document(self.doc.to_bytes())
        self.assertEqual(parsed, self.doc)
        self.assertTrue(parsed.verify())
        self.assertEqual(parsed.dropped, ())

    def test_a_seed_reader_reads_the_signed_topology(self):
        seed = Topology.from_json(self.doc.to_bytes())
        self.assertEqual(len(seed.mixnodes), 6)
        self.assertEqual(len(seed.gateways), 2)
        self.assertEqual(seed.gateway_for(sphinx(901)).public_key, sphinx(42))
        self.assertEqual({n.public_key for n in seed.mixnodes},
                         {n.sphinx_key for n in self.nodes[:6]})

    def test_compact_form_has_the_same_signature(self):
        compact = self.doc.to_json(with_clients=False)
        self.assertNotIn("registeredClients", json.dumps(compact))
        parsed = parse_document(compact)
        self.assertTrue(parsed.verify())
        self.assertIsNone(parsed.document.gateways[0].clients)

    def test_last_seen_is_informational(self):
        data = self.doc.to_json(last_seen={identity(11).public_key: 12345})
        self.assertEqual(data["MixNodes"][0]["lastSeen"], 12345)
        data["MixNodes"][0]["lastSeen"] = 1
        self.assertEqual(parse_document(data), self.doc)

    def refused(self, data, text):
        with self.assertRaises(DocumentError) as e:
            parse_document(data)
        self.assertIn(text, str(e.exception))

    def test_unsigned_refused(self):
        data = self.doc.to_json()
        del data["directorySignature"]
        self.refused(data, "not signed")

    def test_tampered_entry_breaks_the_directory_signature(self):
        data = self.doc.to_json()
        data["MixNodes"].pop()
        self.refused(data, "does not verify")
        data = self.doc.to_json()
        data["directorySignature"]["serial"] = 2
        self.refused(data, "does not verify")
        data = self.doc.to_json()
        data["directorySignature"]["directoryKey"] = B.public_text
        self.refused(data, "does not verify")

    def test_a_client_list_not_the_gateways_is_refused(self):
        data = self.doc.to_json()
        data["MixProviderNodes"][0]["registeredClients"].append(
            {"pubKey": encode_key(sphinx(901))})
        self.refused(data, "MixProviderNodes[0]: registeredClients")

    def test_a_presence_its_node_did_not_sign_is_dropped(self):
        # a directory signing a forged presence of node 11
        forged = _renamed(mixnode(11, 1).presence(T0, signer=identity(77)),
                          identity(11).public_key)
        presences = fresh(self.nodes[1:], T0) + [forged]
        doc = document(A, 1, T0, presences)
        parsed = parse_document(doc.to_bytes())
        self.assertEqual(parsed.dropped, (("MixNodes", 5),))
        mixnodes, gateways = parsed.usable()
        self.assertNotIn(identity(11).public_key, [s.identity_key for s in mixnodes])
        self.assertEqual(len(mixnodes), 5)

    def test_identity_listed_twice_refused(self):
        doc = document(A, 1, T0, fresh(self.nodes, T0) + [self.nodes[0].presence(T0 + 1)])
        self.refused(doc.to_bytes(), "listed twice")

    def test_header_rules(self):
        for field, value, text in [("version", 2, "version must be 1"),
                                   ("serial", -1, "serial must be"),
                                   ("expires", "1", "expires must be"),
                                   ("signature", "xyz", "signature"),
                                   ("directoryKey", None, "directoryKey")]:
            data = self.doc.to_json()
            data["directorySignature"][field] = value
            self.refused(data, text)
        self.refused(b"\xff", "not UTF-8")
        self.refused(b"[" * 100000, "nested too deeply")
        self.refused(b"[]", "JSON object")
        self.refused({"directorySignature": []}, "must be an object")
        data = self.doc.to_json()
        data["MixNodes"] = {}
        self.refused(data, "MixNodes must be an array")

    def test_next_serial(self):
        self.assertEqual(next_serial(5, 3), 6)
        self.assertEqual(next_serial(5, T0), T0)

    @given(st.binary(max_size=500))
    def test_fuzz_bytes(self, data):
        try:
            parse_document(data)
        except DocumentError:
            pass

    @given(st.data())
    def test_fuzz_mutations(self, data):
        text = self.doc.to_bytes()
        position = data.draw(st.integers(0, len(text) - 1))
        replacement = data.draw(st.binary(min_size=0, max_size=4))
        mutated = text[:position] + replacement + text[position + 1:]
        try:
            parsed = parse_document(mutated)
        except DocumentError:
            return
        # whatever survives a mutation is still exactly what A signed
        self.assertTrue(parsed.verify())
        self.assertEqual(parsed.document.signed_bytes(), self.doc.document.signed_bytes())


def _renamed(signed, identity_key):
    return attrs.evolve(signed, presence=attrs.evolve(signed.presence,
                                                      identity_key=identity_key))


def routes(topology):
    """What a client routes on: lastSeen (the newest signed timestamp among
    the agreeing listings) left out."""
    return Topology([attrs.evolve(n, last_seen=0) for n in topology.mixnodes],
                    [attrs.evolve(n, last_seen=0) for n in topology.gateways])


class TrustedDirectoriesTests(SynchronousTestCase):
    def setUp(self):
        self.nodes = network()
        self.trust = TrustedDirectories([A.public_key], 1)

    def doc(self, serial, t=T0, directory=A, **kw):
        return document(directory, serial, t, fresh(self.nodes, t), **kw).to_bytes()

    def refused(self, data, now, text):
        with self.assertRaises(DocumentError) as e:
            self.trust.offer(data, now)
        self.assertIn(text, str(e.exception))

    def test_accepts_a_pinned_directorys_topology(self):
        self.trust.offer(self.doc(1), T0)
        topology = self.trust.topology(T0)
        self.assertEqual(len(topology.mixnodes), 6)
        self.assertEqual(topology.gateway_for(sphinx(900)).public_key, sphinx(41))
        topology.route(topology.gateways[0], random.Random(1))

    def test_unknown_key_refused(self):
        self.refused(self.doc(1, directory=L), T0, "not a pinned directory key")
        self.assertRaises(NoAgreement, self.trust.topology, T0)

    def test_older_serial_refused_and_the_newer_kept(self):
        self.trust.offer(self.doc(5), T0)
        self.refused(self.doc(4, t=T0 + NS), T0 + NS, "older than the one held (5)")
        self.assertEqual(self.trust.current(T0 + NS)[0].document.serial, 5)
        # the same document again is fine; another with the same serial is not
        self.trust.offer(self.doc(5), T0 + NS)
        self.refused(self.doc(5, t=T0 + 2), T0 + NS, "two different topologies")
        self.trust.offer(self.doc(6, t=T0 + NS), T0 + NS)

    def test_expired_future_and_overlong_refused(self):
        self.refused(self.doc(1), T0 + 120 * NS, "expired")
        self.refused(self.doc(1, t=T0 + MAX_CLOCK_SKEW + 1), T0, "in the future")
        self.refused(self.doc(1, lifetime=3601 * NS), T0, "longer than 3600 s")

    def test_keeps_the_last_good_one_until_it_expires(self):
        self.trust.offer(self.doc(1), T0)
        for garbage in (b"", b"<html>", self.doc(1, directory=L), b'{"MixNodes": []}'):
            self.assertRaises(DocumentError, self.trust.offer, garbage, T0 + NS)
        self.assertEqual(len(self.trust.topology(T0 + 119 * NS).mixnodes), 6)
        with self.assertRaises(NoAgreement) as e:
            self.trust.topology(T0 + 120 * NS)
        self.assertIn("0 of 1 pinned directories", str(e.exception))

    def test_from_config(self):
        keys = [A.public_text, B.public_text, C.public_text]
        trust = TrustedDirectories.from_config(keys)
        self.assertEqual((trust.pinned, trust.threshold),
                         (frozenset([A.public_key, B.public_key, C.public_key]), 2))
        self.assertEqual(TrustedDirectories.from_config(keys[:1]).threshold, 1)
        self.assertEqual(TrustedDirectories.from_config(keys, 3).threshold, 3)
        for args, text in [(([],), "at least one"), (("abc",), "at least one"),
                           (([A.public_text, "0OIl"],), "directory_keys[1]: the key"),
                           (([A.public_text, 5],), "directory_keys[1]"),
                           (([A.public_text, A.public_text],), "listed twice"),
                           ((keys, 4), "not in 1..3"), ((keys, True), "not in 1..3")]:
            with self.assertRaises(ValueError) as e:
                TrustedDirectories.from_config(*args)
            self.assertIn(text, str(e.exception))

    def test_threshold_bounds(self):
        self.assertRaises(ValueError, TrustedDirectories, [A.public_key], 2)
        self.assertRaises(ValueError, TrustedDirectories, [A.public_key], 0)

    def test_unchanged_presences_are_read_and_verified_once(self):
        presences = fresh(self.nodes, T0)
        self.trust.offer(document(A, 1, T0, presences).to_bytes(), T0)
        cache = self.trust._cache
        self.assertEqual((len(cache.verified), len(cache.parsed)), (8, 8))
        first = dict(cache.parsed)
        # re-signed by the directory, with other lastSeen: the same entries
        doc = document(A, 2, T0 + NS, presences).to_json(
            last_seen={p.identity_key: 5 for p in presences})
        self.trust.offer(doc, T0 + NS)
        self.assertEqual({k: v[2] for k, v in cache.parsed.items()},
                         {k: v[2] for k, v in first.items()})
        for key, value in cache.parsed.items():
            self.assertIs(value[2], first[key][2])
        # only what the held document lists is remembered
        self.trust.offer(document(A, 3, T0 + NS, presences[:3]).to_bytes(), T0 + NS)
        self.assertEqual((len(cache.verified), len(cache.parsed)), (3, 3))

    def test_a_refused_answer_leaves_nothing_in_the_cache(self):
        self.trust.offer(self.doc(1), T0)
        for n in range(3):
            self.assertRaises(DocumentError, self.trust.offer,
                              document(L, 1, T0, fresh([mixnode(200 + n, 1)], T0)).to_bytes(),
                              T0)
        self.assertEqual(len(self.trust._cache.parsed), 8)

    def test_an_entry_changed_under_the_same_signature_is_read_again(self):
        self.trust.offer(self.doc(1), T0)
        data = document(A, 2, T0, fresh(self.nodes, T0)).to_json()
        data["MixNodes"][0]["host"] = "10.6.6.6:1"
        data["MixNodes"][0]["signature"] = self.trust.current(T0)[0].to_json()[
            "MixNodes"][0]["signature"]
        self.refused(data, T0, "does not verify")


class ThresholdTests(SynchronousTestCase):
    """Three pinned directories, two needed; A and B honest, L lies."""

    def setUp(self):
        self.nodes = network()
        self.t = T0 + 3 * NS
        # honest directories hold presences signed at different times
        self.honest = [document(A, 10, self.t, fresh(self.nodes, T0)),
                       document(B, 20, self.t, fresh(self.nodes, T0 + 2 * NS))]
        self.expected = routes(merge(self.honest, 2, self.t).topology)
        self.assertEqual(len(self.expected.mixnodes), 6)
        self.assertEqual(len(self.expected.gateways), 2)

    def client(self, lying):
        trust = TrustedDirectories([A.public_key, B.public_key, L.public_key], 2)
        for doc in self.honest + [lying]:
            trust.offer(doc.to_bytes(), self.t)
        return trust.agreement(self.t)

    def assertUnchanged(self, lying):
        agreement = self.client(lying)
        self.assertEqual(routes(agreement.topology), self.expected)
        return agreement

    def test_all_three_honest(self):
        self.assertUnchanged(document(L, 1, self.t, fresh(self.nodes, T0 + NS)))

    def test_a_liar_adding_fake_nodes(self):
        fakes = [mixnode(200 + i, 2) for i in range(20)]
        agreement = self.assertUnchanged(
            document(L, 1, self.t, fresh(self.nodes + fakes, self.t)))
        self.assertIn((fakes[0].identity.public_key, "listed alike by 1 of the directories; "
                       "2 needed"), agreement.refused)

    def test_a_liar_dropping_real_nodes(self):
        self.assertUnchanged(document(L, 1, self.t, fresh(self.nodes[::2], self.t)))
        self.assertUnchanged(document(L, 1, self.t, []))

    def test_a_liar_diverting_a_node_to_its_host(self):
        # the liar cannot sign for node 11; it lists a presence the node
        # signed earlier at another host (the node moved since)
        old = self.nodes[0].presence(T0 - 100 * NS, host="10.6.6.6:1789")
        presences = [old] + fresh(self.nodes[1:], self.t)
        self.assertUnchanged(document(L, 1, self.t, presences))

    def test_a_liar_with_a_fake_mixnode_carrying_the_gateways_key(self):
        thief = mixnode(300, 2)
        presences = fresh(self.nodes, self.t) + [
            thief.presence(self.t, sphinx_key=self.nodes[6].sphinx_key)]
        self.assertUnchanged(document(L, 1, self.t, presences))

    def test_a_liar_with_a_fake_gateway_listing_bob(self):
        bob = sphinx(901)
        fake = gateway(301, [bob], port=1)  # sorts first
        presences = fresh(self.nodes, self.t) + [fake.presence(self.t)]
        agreement = self.assertUnchanged(document(L, 1, self.t, presences))
        self.assertEqual(agreement.topology.gateway_for(bob).public_key, sphinx(42))

    def test_a_liar_replaying_an_old_epoch(self):
        trust = TrustedDirectories([A.public_key, B.public_key, L.public_key], 2)
        old_a = document(A, 9, T0, fresh(self.nodes[:2], T0))
        for doc in self.honest:
            trust.offer(doc.to_bytes(), self.t)
        # the liar (or anyone between the client and A) serves A's older document
        self.assertRaises(DocumentError, trust.offer, old_a.to_bytes(), self.t)
        trust.offer(document(L, 1, self.t, []).to_bytes(), self.t)
        self.assertEqual(routes(trust.topology(self.t)), self.expected)

    def test_a_liar_doing_everything_at_once(self):
        fakes = [mixnode(200 + i, 1 + i % 3) for i in range(10)]
        presences = fresh(self.nodes[2:], self.t) + fresh(fakes, self.t) + [
            gateway(301, [sphinx(900), sphinx(901)], port=1).presence(self.t),
            mixnode(300, 3).presence(self.t, sphinx_key=self.nodes[7].sphinx_key,
                                     host="127.0.0.2:1")]
        self.assertUnchanged(document(L, 1, self.t, presences))

    def test_one_directory_down_one_lying(self):
        trust = TrustedDirectories([A.public_key, B.public_key, C.public_key,
                                    L.public_key], 2)
        # C answered once, then went down: its last document still counts
        trust.offer(document(C, 3, T0, fresh(self.nodes, T0)).to_bytes(), T0)
        trust.offer(self.honest[0].to_bytes(), self.t)
        fakes = [mixnode(200 + i, 2) for i in range(5)]
        trust.offer(document(L, 1, self.t, fresh(fakes, self.t)).to_bytes(), self.t)
        self.assertEqual(routes(trust.topology(self.t)), self.expected)
        # once C's document expires, A alone lists nothing twice, and L adds nothing
        self.assertEqual(trust.topology(T0 + 120 * NS), Topology())

    def test_expired_presences_do_not_count(self):
        doc_a = document(A, 1, self.t, [self.nodes[0].presence(T0, lifetime=2 * NS)])
        doc_b = document(B, 1, self.t, [self.nodes[0].presence(T0, lifetime=2 * NS)])
        self.assertEqual(merge([doc_a, doc_b], 2, self.t).topology, Topology())

    def test_a_moved_node_is_listed_where_the_threshold_says(self):
        moved = [n.presence(self.t) for n in self.nodes]
        moved[0] = self.nodes[0].presence(self.t, host="127.0.0.9:1")
        honest = [document(A, 11, self.t, moved), document(B, 21, self.t, moved)]
        # the liar keeps the old host; A and B have the new one
        liar = document(L, 1, self.t, fresh(self.nodes, T0))
        topology = merge(honest + [liar], 2, self.t).topology
        node = [n for n in topology.mixnodes if n.public_key == self.nodes[0].sphinx_key]
        self.assertEqual(str(node[0].address), "127.0.0.9:1")

    def test_rotation_follows_the_announced_time(self):
        node = self.nodes[0]
        start = self.t + 10 * NS
        p = node.presence(self.t, next_sphinx_key=sphinx(999), next_key_from=start)
        docs = [document(d, 1, self.t, [p]) for d in (A, B)]
        self.assertEqual(merge(docs, 2, self.t).topology.mixnodes[0].public_key,
                         node.sphinx_key)
        self.assertEqual(merge(docs, 2, start).topology.mixnodes[0].public_key, sphinx(999))

    def test_two_identities_claiming_one_key_are_both_left_out(self):
        # even when the threshold lists both (directories that do not check)
        thief = mixnode(300, 2).presence(self.t, sphinx_key=self.nodes[6].sphinx_key)
        squatter = mixnode(301, 3).presence(self.t, host=self.nodes[0].host)
        presences = fresh(self.nodes, self.t) + [thief, squatter]
        docs = [document(d, 1, self.t, presences) for d in (A, B)]
        agreement = merge(docs, 2, self.t)
        kept = set(agreement.presences)
        for node in (self.nodes[6], self.nodes[0]):
            self.assertNotIn(node.identity.public_key, kept)
        self.assertNotIn(thief.identity_key, kept)
        self.assertNotIn(squatter.identity_key, kept)
        reasons = dict(agreement.refused)
        self.assertIn("is claimed by 2 identities", reasons[thief.identity_key])
        self.assertEqual(len(kept), 6)

    def test_a_client_two_gateways_list_is_resolved_by_neither(self):
        # in an open network every directory admits a fake gateway listing Bob
        bob, alice = sphinx(901), sphinx(900)
        fake = gateway(301, [bob], port=1)  # sorts first
        presences = fresh(self.nodes, self.t) + [fake.presence(self.t)]
        docs = [document(d, 1, self.t, presences) for d in (A, B)]
        agreement = merge(docs, 2, self.t)
        topology = agreement.topology
        self.assertEqual(agreement.ambiguous_clients, {bob})
        self.assertIsNone(topology.gateway_for(bob))
        self.assertEqual(topology.gateway_for(alice).public_key, sphinx(41))
        # Bob@gateway still reaches the real gateway
        self.assertIsNotNone(topology.gateway_by_key(sphinx(42)))
        self.assertNotIn(bob, topology.clients())

    def test_a_gateway_stays_while_directories_hold_different_client_lists(self):
        # Bob just registered: A has the gateway's new presence, B the old
        # one; the gateway must not drop out meanwhile (it did, when the
        # list was part of what directories must agree on)
        old = gateway(41, [sphinx(900)])
        new = gateway(41, [sphinx(900), sphinx(950)])
        docs = [document(A, 1, self.t, fresh(self.nodes[:6], T0) + [new.presence(T0 + NS)]),
                document(B, 1, self.t, fresh(self.nodes[:6], T0) + [old.presence(T0)])]
        topology = merge(docs, 2, self.t).topology
        [kept] = topology.gateways
        self.assertEqual(kept.registered_clients, tuple(sorted([sphinx(900), sphinx(950)])))
        # and from compact documents, the list comes from whichever carried it
        compact = [parse_document(docs[0].to_json(with_clients=False)), docs[1]]
        [kept] = merge(compact, 2, self.t).topology.gateways
        self.assertEqual(kept.registered_clients, ())
        compact = [parse_document(docs[0].to_json(with_clients=False)), docs[0], docs[1]]
        [kept] = merge(compact, 2, self.t).topology.gateways
        self.assertEqual(len(kept.registered_clients), 2)

    def test_the_nodes_newest_word_even_from_the_liar(self):
        # the liar relays a newer presence the gateway really signed: the
        # routing content is the honest directories', the list the newest
        newer = gateway(42, [sphinx(901), sphinx(960)]).presence(self.t)
        liar = document(L, 1, self.t, fresh(self.nodes[:7], T0) + [newer])
        topology = merge(self.honest + [liar], 2, self.t).topology
        self.assertEqual(topology.gateway_for(sphinx(960)).public_key, sphinx(42))
        # but a new host for it, even signed by the gateway, needs the threshold
        moved = gateway(42, [sphinx(901)]).presence(self.t, host="10.0.0.1:1")
        liar = document(L, 2, self.t, fresh(self.nodes[:7], T0) + [moved])
        topology = merge(self.honest + [liar], 2, self.t).topology
        self.assertEqual(str(topology.gateway_by_key(sphinx(42)).address), "127.0.0.1:1042")

    def test_merge_is_order_independent(self):
        liar = document(L, 1, self.t, fresh(self.nodes[3:] + [mixnode(250, 1)], self.t))
        docs = self.honest + [liar]
        first = merge(docs, 2, self.t).topology
        self.assertEqual(merge(docs[::-1], 2, self.t).topology, first)
        self.assertEqual(merge([docs[1], docs[2], docs[0]], 2, self.t).topology, first)

    def test_threshold_one_of_one_is_the_directory_itself(self):
        self.assertEqual(routes(merge(self.honest[:1], 1, self.t).topology), self.expected)
        self.assertRaises(ValueError, merge, self.honest, 0, self.t)

    @given(st.data())
    def test_any_lie_leaves_the_honest_topology(self, data):
        # the liar lists any subset of real presences (fresh or old, at any
        # host) and any fake nodes, some claiming real keys or hosts
        real = data.draw(st.lists(st.sampled_from(range(len(self.nodes))), unique=True))
        presences = []
        for i in real:
            host = data.draw(st.sampled_from([None, "10.0.0.1:1", "127.0.0.1:1011"]))
            when = data.draw(st.sampled_from([T0 - 200 * NS, T0, self.t]))
            presences.append(self.nodes[i].presence(when, **({"host": host} if host else {})))
        taken = [n.sphinx_key for n in self.nodes] + [sphinx(600 + i) for i in range(5)]
        for n in range(data.draw(st.integers(0, 6))):
            fake = data.draw(st.sampled_from([mixnode(400 + n, 1 + n % 3),
                                              gateway(400 + n, [sphinx(900)], port=2 + n)]))
            key = data.draw(st.sampled_from(taken))
            presences.append(fake.presence(self.t, sphinx_key=key))
        seen, unique = set(), []
        for p in presences:
            if p.identity_key not in seen:
                seen.add(p.identity_key)
                unique.append(p)
        self.assertUnchanged(document(L, 1, self.t, unique))
