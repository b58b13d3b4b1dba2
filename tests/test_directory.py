"""The directory server: every endpoint through StubTreq around the real resource."""

import base64
import json

from hypothesis import given, strategies as st
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from nymtx.directory import presence
from nymtx.directory.presence import MAX_BODY_SIZE, BodyError
from nymtx.directory.registry import Registry
from nymtx.directory.resource import DirectoryResource
from nymtx.keys import KeyPair

START = 1_700_000_000.0
NS = 1_000_000_000


def new_key():
    return KeyPair.generate().public_text


def mixnode_body(key=None, host="127.0.0.1:1789", layer=1, **extra):
    body = {"host": host, "pubKey": key or new_key(), "layer": layer, "version": "0.5.0"}
    body.update(extra)
    return body


def gateway_body(key=None, clients=(), **extra):
    body = {"host": "127.0.0.1:1790", "mixnetListener": "127.0.0.1:1790",
            "clientListener": "127.0.0.1:9000", "pubKey": key or new_key(),
            "registeredClients": [{"pubKey": c} for c in clients], "version": "0.5.0"}
    body.update(extra)
    return body


class DirectoryTestCase(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(START)
        self.registry = Registry(self.clock)
        self.stub = StubTreq(DirectoryResource(self.registry))

    def call(self, method, path, body=None, raw=None):
        data = raw if raw is not None else (
            None if body is None else json.dumps(body).encode("utf-8"))
        response = self.successResultOf(
            self.stub.request(method, "http://directory.test" + path, data=data))
        content = self.successResultOf(response.content())
        return response, content

    def json_call(self, method, path, body=None, raw=None):
        response, content = self.call(method, path, body, raw)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"application/json; charset=utf-8"])
        return response.code, json.loads(content)

    def topology(self):
        code, data = self.json_call("GET", "/api/presence/topology")
        self.assertEqual(code, 200)
        return data

    def announce(self, body, path="/api/presence/mixnodes"):
        code, data = self.json_call("POST", path, body)
        self.assertEqual((code, data), (201, {"ok": True}))


class BasicEndpointTests(DirectoryTestCase):

    def test_healthcheck(self):
        self.assertEqual(self.json_call("GET", "/api/healthcheck"), (200, {"ok": True}))

    def test_empty_topology_has_the_seeds_keys(self):
        self.assertEqual(self.topology(), {"MixNodes": [], "MixProviderNodes": []})

    def test_unknown_path_is_404_json(self):
        code, data = self.json_call("GET", "/api/nothing")
        self.assertEqual(code, 404)
        self.assertIn("/api/nothing", data["error"])

    def test_wrong_method_is_405_and_says_what_is_allowed(self):
        response, content = self.call("DELETE", "/api/presence/topology")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET"])
        self.assertIn("DELETE", json.loads(content)["error"])
        code, _ = self.json_call("GET", "/api/presence/mixnodes")
        self.assertEqual(code, 405)
        response, _ = self.call("PUT", "/api/metrics/mixes", {})
        self.assertEqual(response.headers.getRawHeaders(b"Allow"), [b"GET, POST"])

    def test_head_is_answered_like_get_without_a_body(self):
        response, content = self.call("HEAD", "/api/healthcheck")
        self.assertEqual((response.code, content), (200, b""))

    def test_a_trailing_slash_is_the_same_endpoint(self):
        self.assertEqual(self.json_call("GET", "/api/healthcheck/"), (200, {"ok": True}))

    def test_served_under_a_prefix(self):
        from twisted.web.resource import Resource
        root = Resource()
        root.putChild(b"dir", DirectoryResource(self.registry))
        stub = StubTreq(root)
        response = self.successResultOf(stub.get("http://x/dir/api/healthcheck"))
        self.assertEqual(response.code, 200)


class MixnodePresenceTests(DirectoryTestCase):

    def test_announce_appears_in_topology_with_last_seen_in_ns(self):
        body = mixnode_body(layer=2, location="Neuchâtel")
        self.announce(body)
        [entry] = self.topology()["MixNodes"]
        self.assertEqual(entry, dict(body, lastSeen=int(START * NS)))

    def test_unknown_fields_and_client_lastseen_are_not_kept(self):
        body = mixnode_body(lastSeen=5, extra="x", location=None)
        self.announce(body)
        [entry] = self.topology()["MixNodes"]
        self.assertNotIn("extra", entry)
        self.assertNotIn("location", entry)
        self.assertEqual(entry["lastSeen"], int(START * NS))

    def test_keys_and_addresses_are_stored_canonically(self):
        pair = KeyPair.generate()
        b64 = base64.urlsafe_b64encode(pair.public_key).decode().rstrip("=")
        self.announce(mixnode_body(key=b64, host="[::1]:01789"))
        [entry] = self.topology()["MixNodes"]
        self.assertEqual(entry["pubKey"], pair.public_text)
        self.assertEqual(entry["host"], "[::1]:1789")

    def test_reannounce_replaces_the_old_entry(self):
        key = new_key()
        self.announce(mixnode_body(key=key, layer=1, host="127.0.0.1:1000"))
        self.clock.advance(1.5)
        self.announce(mixnode_body(key=key, layer=3, host="127.0.0.1:2000"))
        [entry] = self.topology()["MixNodes"]
        self.assertEqual((entry["layer"], entry["host"], entry["lastSeen"]),
                         (3, "127.0.0.1:2000", int((START + 1.5) * NS)))

    def test_topology_is_ordered_by_layer(self):
        for layer in (3, 1, 2):
            self.announce(mixnode_body(layer=layer))
        self.assertEqual([m["layer"] for m in self.topology()["MixNodes"]], [1, 2, 3])


class GatewayPresenceTests(DirectoryTestCase):

    def test_announce_gateway(self):
        clients = [new_key(), new_key()]
        body = gateway_body(clients=clients, location="here")
        self.announce(body, "/api/presence/mixproviders")
        [entry] = self.topology()["MixProviderNodes"]
        self.assertEqual(entry, dict(body, lastSeen=int(START * NS)))
        self.assertEqual(self.topology()["MixNodes"], [])

    def test_gateways_is_an_alias(self):
        self.announce(gateway_body(), "/api/presence/gateways")
        self.assertEqual(len(self.topology()["MixProviderNodes"]), 1)

    def test_nym_v05_provider_without_host(self):
        body = gateway_body()
        del body["host"], body["registeredClients"]
        self.announce(body, "/api/presence/mixproviders")
        [entry] = self.topology()["MixProviderNodes"]
        self.assertEqual(entry["host"], "127.0.0.1:1790")
        self.assertEqual(entry["mixnetListener"], "127.0.0.1:1790")
        self.assertEqual(entry["registeredClients"], [])

    def test_registered_clients_are_deduplicated(self):
        client = new_key()
        self.announce(gateway_body(clients=[client, client]), "/api/presence/mixproviders")
        [entry] = self.topology()["MixProviderNodes"]
        self.assertEqual(entry["registeredClients"], [{"pubKey": client}])

    def test_host_and_mixnet_listener_must_agree(self):
        code, data = self.json_call("POST", "/api/presence/mixproviders",
                                    gateway_body(mixnetListener="127.0.0.1:1"))
        self.assertEqual(code, 400)
        self.assertIn("mixnetListener", data["error"])


def _without(field):
    def change(body):
        del body[field]
    return change


def _setting(field, value):
    def change(body):
        body[field] = value
    return change


# (change to a valid body, text the error must contain)
BAD_MIXNODES = [
    (_without("pubKey"), "pubKey: missing"),
    (_setting("pubKey", 5), "pubKey: must be a string"),
    (_setting("pubKey", "abc"), "pubKey:"),
    (_setting("pubKey", "1" * 33), "pubKey:"),
    (_without("host"), "host: missing"),
    (_setting("host", "localhost:1789"), "host:"),
    (_setting("host", "127.0.0.1:0"), "host:"),
    (_setting("host", "127.0.0.1"), "host:"),
    (_without("layer"), "layer: missing"),
    (_setting("layer", 0), "layer: 0 is not a layer"),
    (_setting("layer", 4), "layer: 4"),
    (_setting("layer", "1"), "layer: must be an integer"),
    (_setting("layer", 1.0), "layer: must be an integer"),
    (_setting("layer", True), "layer: must be an integer, not a boolean"),
    (_without("version"), "version: missing"),
    (_setting("version", ""), "version: is empty"),
    (_setting("version", "x" * 65), "version: is 65 characters"),
    (_setting("version", "0.5\n"), "version: contains control characters"),
    (_setting("version", ["0.5"]), "version: must be a string, not an array"),
    (_setting("location", 7), "location: must be a string"),
]


class MalformedPresenceTests(DirectoryTestCase):

    def setUp(self):
        super().setUp()
        self.announce(mixnode_body())
        self.announce(gateway_body(clients=[new_key()]), "/api/presence/mixproviders")
        self.before = self.topology()

    def assertRefused(self, path, raw, expected, code=400):
        status, data = self.json_call("POST", path, raw=raw)
        self.assertEqual(status, code, data)
        self.assertEqual(list(data), ["error"])
        self.assertIn(expected, data["error"])
        self.assertEqual(self.topology(), self.before)

    def test_each_bad_mixnode_field_is_named(self):
        for change, expected in BAD_MIXNODES:
            body = mixnode_body()
            change(body)
            self.assertRefused("/api/presence/mixnodes", json.dumps(body).encode(), expected)

    def test_bad_gateway_fields_are_named(self):
        cases = [
            (_without("clientListener"), "clientListener: missing"),
            (_setting("clientListener", "nowhere"), "clientListener:"),
            (_setting("registeredClients", {"pubKey": new_key()}),
             "registeredClients: must be an array"),
            (_setting("registeredClients", [{"pubKey": new_key()}, "x"]),
             "registeredClients[1]: must be an object"),
            (_setting("registeredClients", [{}]), "registeredClients[0].pubKey: missing"),
            (_setting("registeredClients", [{"pubKey": "zz"}]),
             "registeredClients[0].pubKey:"),
        ]
        for path in ("/api/presence/mixproviders", "/api/presence/gateways"):
            for change, expected in cases:
                body = gateway_body()
                change(body)
                self.assertRefused(path, json.dumps(body).encode(), expected)
            body = gateway_body()
            del body["host"], body["mixnetListener"]
            self.assertRefused(path, json.dumps(body).encode(), "host: missing")

    def test_bodies_that_are_not_json_objects(self):
        for raw, expected in [
                (b"", "not valid JSON"),
                (b"{", "not valid JSON"),
                (b"[1, 2]", "must be a JSON object, not an array"),
                (b"null", "not null"),
                (b"\xff\xfe{}", "not UTF-8"),
                (b'{"layer": NaN}', "not valid JSON"),
                (b"[" * 50_000, "not valid JSON"),
                (b'{"layer": 1' + b"0" * 5000 + b"}", "not valid JSON")]:
            self.assertRefused("/api/presence/mixnodes", raw, expected)

    def test_an_oversized_body_is_413(self):
        body = mixnode_body(location="x" * MAX_BODY_SIZE)
        self.assertRefused("/api/presence/mixnodes", json.dumps(body).encode(),
                           f"limit of {MAX_BODY_SIZE} bytes", code=413)

    def test_error_text_is_bounded(self):
        status, data = self.json_call("POST", "/api/presence/mixnodes",
                                      mixnode_body(host="1" * 10_000))
        self.assertEqual(status, 400)
        self.assertLess(len(data["error"]), 400)

    @given(data=st.data(), drop=st.booleans())
    def test_malformed_mixnode_fields_never_change_the_topology(self, data, drop):
        not_text = (st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers()
                    | st.lists(st.integers(), max_size=3)
                    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
        field, bad = data.draw(st.sampled_from([
            # '!' is in neither key alphabet; text without ':' is no address
            ("pubKey", not_text | st.text(max_size=40).map(lambda t: t + "!")),
            ("host", not_text.filter(lambda v: v is not None)
             | st.text(max_size=40).map(lambda t: t.replace(":", ""))),
            ("layer", st.integers().filter(lambda n: n not in (1, 2, 3))
             | st.text(max_size=3) | st.floats(allow_nan=False, allow_infinity=False) | st.booleans()),
            ("version", not_text.filter(lambda v: v is not None)
             | st.text(min_size=65, max_size=80) | st.just("  ")
             | st.text(max_size=5).map(lambda t: t + "\x00")),
        ]))
        value = data.draw(bad)
        body = mixnode_body(key=self.before["MixNodes"][0]["pubKey"], layer=3)
        if drop:
            del body[field]
        else:
            body[field] = value
        status, data = self.json_call("POST", "/api/presence/mixnodes",
                                      raw=json.dumps(body).encode())
        self.assertEqual(status, 400)
        self.assertTrue(data["error"].startswith(field + ":"), data)
        self.assertEqual(self.topology(), self.before)

    @given(raw=st.one_of(
        st.binary(max_size=200),
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                     max_leaves=20).map(lambda v: json.dumps(v).encode())),
        path=st.sampled_from(["/api/presence/mixnodes", "/api/presence/mixproviders",
                              "/api/presence/gateways", "/api/metrics/mixes"]))
    def test_arbitrary_bodies_get_400_and_change_nothing(self, raw, path):
        metrics = self.registry.metrics()
        status, data = self.json_call("POST", path, raw=raw)
        self.assertEqual(status, 400, data)
        self.assertIsInstance(data["error"], str)
        self.assertEqual(self.topology(), self.before)
        self.assertEqual(self.registry.metrics(), metrics)


class ParserFuzzTests(SynchronousTestCase):

    @given(st.binary(max_size=300))
    def test_parsers_raise_only_body_errors(self, raw):
        for parse in (presence.parse_mixnode, presence.parse_gateway,
                      presence.parse_metrics):
            try:
                parse(raw)
            except BodyError:
                pass

    @given(st.dictionaries(
        st.sampled_from(["host", "pubKey", "layer", "version", "location", "clientListener",
                         "mixnetListener", "registeredClients", "received", "sent",
                         "dropped"]),
        st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                     | st.text(max_size=50),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=20), inner, max_size=3),
                     max_leaves=10)))
    def test_parsers_on_objects_raise_only_body_errors(self, data):
        raw = json.dumps(data).encode()
        for parse in (presence.parse_mixnode, presence.parse_gateway,
                      presence.parse_metrics):
            try:
                parse(raw)
            except BodyError as e:
                self.assertTrue(str(e))


class ExpiryTests(DirectoryTestCase):

    def test_a_node_leaves_after_ten_seconds_of_silence(self):
        self.announce(mixnode_body())
        self.announce(gateway_body(), "/api/presence/mixproviders")
        self.clock.advance(9.9)
        self.assertEqual(len(self.topology()["MixNodes"]), 1)
        self.assertEqual(len(self.topology()["MixProviderNodes"]), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.topology(), {"MixNodes": [], "MixProviderNodes": []})

    def test_announcing_keeps_a_node_in(self):
        key = new_key()
        for _ in range(20):
            self.announce(mixnode_body(key=key))
            self.clock.advance(1.5)
        self.assertEqual(len(self.topology()["MixNodes"]), 1)
        self.clock.advance(8.5)
        self.assertEqual(self.topology()["MixNodes"], [])

    def test_the_window_is_configurable(self):
        self.registry.expiry = 3.0
        self.announce(mixnode_body())
        self.clock.advance(2.9)
        self.assertEqual(len(self.topology()["MixNodes"]), 1)
        self.clock.advance(0.1)
        self.assertEqual(self.topology()["MixNodes"], [])

    def test_announcing_expires_others(self):
        self.announce(mixnode_body())
        self.clock.advance(10)
        self.announce(gateway_body(), "/api/presence/mixproviders")
        # Only the announce ran since: it must have dropped the silent node.
        self.assertEqual(len(self.registry._mixnodes), 0)


class MetricsTests(DirectoryTestCase):
    """Metrics are published as per-node totals over whole windows, never
    per next hop nor per second (a traffic matrix for anyone who asks)."""

    def metric(self, key, received=10, sent=None, **extra):
        body = {"pubKey": key, "received": received,
                "sent": sent if sent is not None else {"127.0.0.1:1790": received}}
        body.update(extra)
        return body

    def to_next_window(self, *keys):
        """Advance past the current window's end, keeping *keys* announced."""
        window = self.registry.window
        left = window - (self.clock.seconds() % window)
        while left > 0:
            step = min(left, 5.0)
            self.clock.advance(step)
            left -= step
            for key in keys:
                self.announce(mixnode_body(key=key))

    def test_report_is_shown_only_once_its_window_has_ended(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        code, data = self.json_call("POST", "/api/metrics/mixes",
                                    self.metric(key, dropped={"queue full": 2}))
        self.assertEqual((code, data), (201, {"ok": True}))
        self.assertEqual(self.json_call("GET", "/api/metrics/mixes"), (200, []))
        window_start = int(START // 60 * 60 * NS)
        self.to_next_window(key)
        code, data = self.json_call("GET", "/api/metrics/mixes")
        self.assertEqual(data, [{"pubKey": key, "received": 10, "sent": 10,
                                 "dropped": {"queue full": 2},
                                 "windowStart": window_start, "windowSeconds": 60.0}])

    def test_per_next_hop_counts_are_never_published(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        self.json_call("POST", "/api/metrics/mixes", self.metric(
            key, 7, sent={"10.9.9.1:1789": 4, "10.9.9.2:1789": 3}))
        self.json_call("POST", "/api/metrics/mixes", self.metric(key, 5, sent=5))
        self.to_next_window(key)
        _, body = self.call("GET", "/api/metrics/mixes")
        self.assertNotIn(b"10.9.9.", body)
        [metric] = json.loads(body)
        self.assertEqual((metric["received"], metric["sent"]), (12, 12))
        self.assertNotIn(b"10.9.9.", self.call("GET", "/")[1])

    def test_reports_in_one_window_are_summed(self):
        a, b = new_key(), new_key()
        for key, n in [(a, 1), (b, 2), (a, 3)]:
            self.announce(mixnode_body(key=key))
            self.json_call("POST", "/api/metrics/mixes", self.metric(key, n))
            self.clock.advance(1)
        self.to_next_window(a, b)
        _, data = self.json_call("GET", "/api/metrics/mixes")
        self.assertEqual(sorted((m["pubKey"], m["received"]) for m in data),
                         sorted([(a, 4), (b, 2)]))

    def test_two_readings_a_second_apart_do_not_give_the_second_back(self):
        # A sliding window would: the difference of two readings is the
        # last second's count. A whole window does not change between them.
        key = new_key()
        self.announce(mixnode_body(key=key))
        self.json_call("POST", "/api/metrics/mixes", self.metric(key, 10))
        self.to_next_window(key)
        first = self.json_call("GET", "/api/metrics/mixes")
        self.json_call("POST", "/api/metrics/mixes", self.metric(key, 99))
        self.clock.advance(1)
        self.announce(mixnode_body(key=key))
        self.assertEqual(self.json_call("GET", "/api/metrics/mixes"), first)
        self.to_next_window(key)
        _, [metric] = self.json_call("GET", "/api/metrics/mixes")
        self.assertEqual(metric["received"], 99)

    def test_a_window_without_reports_shows_nothing(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        self.json_call("POST", "/api/metrics/mixes", self.metric(key))
        self.to_next_window(key)
        self.json_call("POST", "/api/metrics/mixes", self.metric(key, 1))
        self.to_next_window(key)
        self.to_next_window(key)
        self.assertEqual(self.json_call("GET", "/api/metrics/mixes"), (200, []))

    def test_metrics_of_an_expired_node_are_dropped(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        self.json_call("POST", "/api/metrics/mixes", self.metric(key))
        self.clock.advance(60)
        self.assertEqual(self.topology()["MixNodes"], [])
        self.assertEqual(self.json_call("GET", "/api/metrics/mixes"), (200, []))

    def test_drop_reasons_are_bounded_per_window(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        for i in range(3):
            self.json_call("POST", "/api/metrics/mixes", self.metric(
                key, dropped={f"reason {i} {j}": 1 for j in range(30)}))
        self.to_next_window(key)
        _, [metric] = self.json_call("GET", "/api/metrics/mixes")
        self.assertEqual(len(metric["dropped"]), 33)
        self.assertEqual(metric["dropped"]["other"], 90 - 32)
        self.assertEqual(sum(metric["dropped"].values()), 90)

    def test_bad_metrics(self):
        key = new_key()
        for body, expected in [
                (self.metric(key, received=-1), "received: -1 is out of range"),
                (self.metric(key, received="1"), "received: must be an integer"),
                (self.metric(key, sent=[]), "sent: must be an integer or an object"),
                (self.metric(key, sent=-3), "sent: -3 is out of range"),
                (self.metric(key, sent={"nowhere": 1}), "sent:"),
                (self.metric(key, sent={"127.0.0.1:1": True}), "must be an integer"),
                (self.metric(key, sent={"127.0.0.1:1": 2 ** 62, "127.0.0.1:2": 2 ** 62}),
                 "sent: the total is out of range"),
                (self.metric(key, dropped={"": 1}), "dropped: a drop reason is empty"),
                (self.metric(key, dropped={"x": 2 ** 64}), "out of range"),
                ({"received": 1, "sent": {}}, "pubKey: missing")]:
            code, data = self.json_call("POST", "/api/metrics/mixes", body)
            self.assertEqual(code, 400)
            self.assertIn(expected, data["error"])
        self.to_next_window()
        self.assertEqual(self.json_call("GET", "/api/metrics/mixes"), (200, []))

    def test_rates_are_averaged_over_the_window(self):
        key = new_key()
        self.announce(mixnode_body(key=key))
        self.json_call("POST", "/api/metrics/mixes", self.metric(key, 100))
        self.assertEqual(self.registry.rates(), {})
        self.clock.advance(0.5)
        self.json_call("POST", "/api/metrics/mixes",
                       self.metric(key, 500, sent={"127.0.0.1:1": 30, "127.0.0.1:2": 20},
                                   dropped={"late": 60}))
        self.to_next_window(key)
        self.assertEqual(self.registry.rates(),
                         {key: {"received": 10.0, "sent": 2.5, "dropped": 1.0}})


class CapacityTests(DirectoryTestCase):

    def test_a_full_directory_refuses_new_nodes_but_not_known_ones(self):
        self.registry.capacity = 2
        keys = [new_key() for _ in range(3)]
        self.announce(mixnode_body(key=keys[0]))
        self.announce(mixnode_body(key=keys[1]))
        code, data = self.json_call("POST", "/api/presence/mixnodes", mixnode_body(key=keys[2]))
        self.assertEqual(code, 503)
        self.assertIn("2 mixnodes", data["error"])
        self.announce(mixnode_body(key=keys[0]))
        self.assertEqual(len(self.topology()["MixNodes"]), 2)


class PageTests(DirectoryTestCase):

    def page(self):
        response, content = self.call("GET", "/")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"Content-Type"),
                         [b"text/html; charset=utf-8"])
        self.assertIn(b"default-src 'none'",
                      response.headers.getRawHeaders(b"Content-Security-Policy")[0])
        return content.decode("utf-8")

    def test_empty_network(self):
        text = self.page()
        self.assertIn('http-equiv="refresh"', text)
        self.assertIn("no gateways", text)
        for layer in (1, 2, 3):
            self.assertIn(f"Layer {layer}", text)

    def test_shows_nodes_clients_last_seen_and_rates(self):
        mix, client, gateway = new_key(), new_key(), new_key()
        self.announce(mixnode_body(key=mix, layer=2, host="10.0.0.2:1789"))
        self.announce(gateway_body(key=gateway, clients=[client]), "/api/presence/mixproviders")
        self.json_call("POST", "/api/metrics/mixes",
                       {"pubKey": mix, "received": 600, "sent": {"10.0.0.3:1789": 300}})
        # the rates shown are those of the last whole minute
        for _ in range(8):
            self.clock.advance(5)
            self.announce(mixnode_body(key=mix, layer=2, host="10.0.0.2:1789"))
            self.announce(gateway_body(key=gateway, clients=[client]),
                          "/api/presence/mixproviders")
        self.clock.advance(2.5)
        text = self.page()
        self.assertIn(mix, text)
        self.assertIn("10.0.0.2:1789", text)
        self.assertIn(client, text)
        self.assertIn("127.0.0.1:9000", text)
        self.assertIn("2.5 s ago", text)
        self.assertIn("<td>10.0</td><td>5.0</td><td>0.0</td>", text)
        self.assertNotIn("10.0.0.3", text)
        layer2 = text.index("Layer 2")
        self.assertTrue(layer2 < text.index(mix) < text.index("Layer 3"))

    def test_node_text_is_escaped(self):
        evil = '<script>alert("x")</script>'
        self.announce(mixnode_body(version="<b>1", location=evil))
        self.announce(gateway_body(location="&amp;\"'"), "/api/presence/mixproviders")
        text = self.page()
        self.assertNotIn("<script>", text)
        self.assertNotIn("<b>", text)
        self.assertIn("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;", text)
        self.assertIn("&amp;amp;&quot;&#x27;", text)
