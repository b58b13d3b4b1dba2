"""Several directories, and signing nodes, behind the IDirectoryClient
that nodes and clients already use.

``TrustedDirectoryClient`` asks every pinned directory for its signed
topology, offers each answer to a TrustedDirectories, and answers
``get_topology()`` with the topology a threshold of them agree on; nodes
announce to every directory. A directory that fails or lies is logged once
when it starts and once when it stops; the others carry on.

``SigningDirectoryClient`` signs what a node announces and reports with its
identity key before passing it on, so that a MixnodeService or
GatewayService given one as its ``directory`` speaks the signed API
without a change of its own.
"""

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.logger import Logger
from zope.interface import implementer

from nymtx.directory.client import DirectoryError
from nymtx.interfaces import IDirectoryClient
from nymtx.keys import KeyFormatError, decode_key, encode_key
from nymtx.trust.agreement import NoAgreement
from nymtx.trust.document import DocumentError
from nymtx.trust.metrics import sign_metrics
from nymtx.topology import Topology
from nymtx.trust.identity import encode_b58
from nymtx.trust.presence import (
    DEFAULT_PRESENCE_LIFETIME, NS, ROLE_GATEWAY, ROLE_MIXNODE, PresenceError,
    parse_signed_gateway, sign_seed_presence)


class TopologyExpired(DirectoryError):
    """No threshold of current signed documents: the last good topology is
    too old to route on (a client must drop it, not keep it)."""


@implementer(IDirectoryClient)
@attrs.define(eq=False)
class TrustedDirectoryClient:
    """*directories*: DirectoryClients, one per directory; *trust*: the
    TrustedDirectories holding their pinned keys; *clock*: ``seconds()``."""

    directories: list = attrs.field(converter=list)
    trust: object
    clock: object
    #: read the compact topology (``?clients=none``: bounded by design,
    #: about 500 bytes a node whatever its clients) and fetch each gateway's
    #: client list on its own, once per list (docs/directory.md)
    compact: bool = True
    #: lists fetched per refresh at most (each costs a signature check)
    max_list_fetches: int = 16
    #: client keys held across every list at most: past it, a list is not
    #: kept (its clients need CLIENT@GATEWAY), so lists cannot grow memory
    max_listed_clients: int = 100_000
    # base_url -> the last problem logged for it (None once it answers well)
    _trouble: dict = attrs.field(factory=dict, init=False)
    # (gateway identity, clients digest) -> the checked list of client keys
    _lists: dict = attrs.field(factory=dict, init=False)
    _turn: int = attrs.field(default=0, init=False)
    _full_logged: bool = attrs.field(default=False, init=False)

    log = Logger()

    def _now(self):
        return int(self.clock.seconds() * NS)

    def _note(self, directory, problem):
        url = directory.base_url
        if problem is None:
            if self._trouble.get(url) is not None:
                self.log.info("directory {url} answers again", url=url)
            self._trouble[url] = None
        elif self._trouble.get(url) != problem:
            self._trouble[url] = problem
            self.log.warn("directory {url}: {problem}", url=url, problem=problem)

    def get_topology(self):
        """Deferred[Topology] a threshold of the pinned directories agree on;
        fails with TopologyExpired when fewer have a current document."""
        async def fetch():
            answers = await DeferredList(
                [self._topology_json(d) for d in self.directories], consumeErrors=True)
            now = self._now()
            for directory, (ok, result) in zip(self.directories, answers):
                if not ok:
                    self._note(directory, result.getErrorMessage())
                    continue
                try:
                    self.trust.offer(result, now)
                except DocumentError as e:
                    self._note(directory, f"refused its topology: {e}")
                    continue
                self._note(directory, None)
            try:
                if not self.compact or not hasattr(self.trust, "agreement"):
                    return self.trust.topology(now)
                agreement = self.trust.agreement(now)
            except NoAgreement as e:
                raise TopologyExpired(str(e))
            return await self._with_lists(agreement)
        return Deferred.fromCoroutine(fetch())

    def _topology_json(self, directory):
        if self.compact:
            try:
                return directory.get_topology_json(compact=True)
            except TypeError:
                pass  # a directory client without the compact form
        return directory.get_topology_json()

    async def _with_lists(self, agreement):
        """The agreement's topology, each gateway with the client list whose
        digest it signed: carried in a document, held from an earlier
        refresh, or fetched now from a directory (and checked)."""
        gateways = {i: s for i, s in agreement.presences.items()
                    if s.presence.role == ROLE_GATEWAY}
        wanted = {(i, s.presence.clients_digest) for i, s in gateways.items()}
        lists = {k: v for k, v in self._lists.items() if k in wanted}
        held = sum(len(v) for v in lists.values())
        missing = []
        for identity in sorted(gateways):
            signed = gateways[identity]
            key = (identity, signed.presence.clients_digest)
            if key in lists:
                continue
            if signed.presence.clients_count == 0:
                lists[key] = ()
            elif signed.clients is not None:
                missing.insert(0, (key, signed.clients))  # carried: free to keep
            else:
                missing.append((key, None))
        carried = [m for m in missing if m[1] is not None]
        fetch = [m for m in missing if m[1] is None]
        if len(fetch) > self.max_list_fetches:
            # the next refresh takes the next ones: every list comes in turn
            start = self._turn % len(fetch)
            fetch = (fetch[start:] + fetch[:start])[:self.max_list_fetches]
            self._turn += self.max_list_fetches
        results = await DeferredList([Deferred.fromCoroutine(self._fetch_list(key))
                                      for key, _ in fetch],
                                     consumeErrors=True)
        got = carried + [(key, result) for (key, _), (ok, result) in zip(fetch, results)
                         if ok and result is not None]
        for key, clients in got:
            if held + len(clients) > self.max_listed_clients:
                if not self._full_logged:
                    self._full_logged = True
                    self.log.warn("client lists: more than {n} client keys listed; further"
                                  " lists are not kept (their clients are reached as"
                                  " CLIENT@GATEWAY)", n=self.max_listed_clients)
                continue
            lists[key] = clients
            held += len(clients)
        self._lists = lists
        # a client two gateways list is resolved by neither (as merge does)
        count = {}
        for clients in lists.values():
            for client in clients:
                count[client] = count.get(client, 0) + 1
        topology = agreement.topology
        out = []
        for gateway in topology.gateways:
            signed = gateways.get(gateway.identity_key)
            clients = () if signed is None else lists.get(
                (gateway.identity_key, signed.presence.clients_digest), ())
            out.append(attrs.evolve(gateway, registered_clients=tuple(
                c for c in clients if count.get(c) == 1)))
        return Topology(topology.mixnodes, out)

    async def _fetch_list(self, key):
        identity, digest = key
        for directory in self.directories:
            get = getattr(directory, "get_gateway_presence", None)
            if get is None:
                continue
            try:
                data = await get(encode_b58(identity))
                signed = parse_signed_gateway(data)
            except (DirectoryError, PresenceError):
                continue
            if signed.identity_key == identity and signed.clients is not None \
                    and signed.presence.clients_digest == digest:
                return signed.clients
        return None

    def _to_all(self, call):
        async def send():
            results = await DeferredList([call(d) for d in self.directories],
                                         consumeErrors=True)
            failed = []
            for directory, (ok, result) in zip(self.directories, results):
                self._note(directory, None if ok else result.getErrorMessage())
                if not ok:
                    failed.append(result.getErrorMessage())
            if len(failed) == len(self.directories):
                raise DirectoryError("every directory failed: " + "; ".join(failed))
        return Deferred.fromCoroutine(send())

    def announce_mixnode(self, presence):
        """POST to every directory; fails only if every one fails."""
        return self._to_all(lambda d: d.announce_mixnode(presence))

    def announce_gateway(self, presence):
        return self._to_all(lambda d: d.announce_gateway(presence))

    def report_metrics(self, metrics):
        return self._to_all(lambda d: d.report_metrics(metrics))

    def get_metrics(self):
        """The first directory's metrics that answers."""
        async def fetch():
            errors = []
            for directory in self.directories:
                try:
                    return await directory.get_metrics()
                except DirectoryError as e:
                    errors.append(str(e))
            raise DirectoryError("no directory answered: " + "; ".join(errors))
        return Deferred.fromCoroutine(fetch())

    def close(self):
        return DeferredList([d.close() for d in self.directories], consumeErrors=True)


@implementer(IDirectoryClient)
@attrs.define(eq=False)
class SigningDirectoryClient:
    """Wraps *directory* (any IDirectoryClient): presences and metrics go
    out signed by *identity* at the time of *clock*; reads pass through.

    *schedule*, a RotationSchedule, when given, chooses the Sphinx key
    announced as in use (a mixnode's pubKey; a gateway's sphinxKey, its
    pubKey staying its name) and the next one announced ahead.
    """

    directory: object
    identity: object
    clock: object
    lifetime: int = DEFAULT_PRESENCE_LIFETIME
    schedule: object = None

    def _now(self):
        return int(self.clock.seconds() * NS)

    def _sign(self, role, presence):
        now = self._now()
        rotation = {}
        if self.schedule is not None:
            key, start = self.schedule.announced(now)
            in_use = self.schedule.in_use(now)
            if role == ROLE_GATEWAY:
                # a gateway's pubKey is its name: the key in use goes beside it
                try:
                    name = decode_key(presence.get("pubKey"))
                except (KeyFormatError, TypeError):
                    name = None  # refused below, by sign_seed_presence's checks
                if in_use != name:
                    rotation["gateway_sphinx_key"] = in_use
            else:
                presence = dict(presence, pubKey=encode_key(in_use))
            if key is not None:
                rotation.update(next_sphinx_key=key, next_key_from=start)
        try:
            return sign_seed_presence(self.identity, role, presence, now,
                                      lifetime=self.lifetime, **rotation).to_json()
        except PresenceError as e:
            raise DirectoryError(f"cannot sign the presence: {e}")

    def get_topology(self):
        return self.directory.get_topology()

    def announce_mixnode(self, presence):
        try:
            body = self._sign(ROLE_MIXNODE, presence)
        except DirectoryError as e:
            return fail(e)
        return self.directory.announce_mixnode(body)

    def announce_gateway(self, presence):
        try:
            body = self._sign(ROLE_GATEWAY, presence)
        except DirectoryError as e:
            return fail(e)
        return self.directory.announce_gateway(body)

    def report_metrics(self, metrics):
        try:
            sphinx_key = decode_key(metrics["pubKey"])
            if self.schedule is not None:
                # the key the presence announces in use, not the first one
                sphinx_key = self.schedule.in_use(self._now())
            sent = metrics["sent"]
            if isinstance(sent, dict):
                sent = sum(sent.values())
            body = sign_metrics(self.identity, sphinx_key, dict(metrics, sent=sent),
                                self._now()).to_json()
        except (KeyError, TypeError, ValueError) as e:
            return fail(DirectoryError(f"cannot sign the metrics: {e}"))
        return self.directory.report_metrics(body)

    def get_metrics(self):
        return self.directory.get_metrics()

    def close(self):
        return self.directory.close()
