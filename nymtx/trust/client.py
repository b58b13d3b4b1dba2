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
from nymtx.keys import decode_key, encode_key
from nymtx.trust.agreement import NoAgreement
from nymtx.trust.document import DocumentError
from nymtx.trust.metrics import sign_metrics
from nymtx.trust.presence import (
    DEFAULT_PRESENCE_LIFETIME, NS, ROLE_GATEWAY, ROLE_MIXNODE, PresenceError,
    sign_seed_presence)


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
    # base_url -> the last problem logged for it (None once it answers well)
    _trouble: dict = attrs.field(factory=dict, init=False)

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
                [d.get_topology_json() for d in self.directories], consumeErrors=True)
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
                return self.trust.topology(now)
            except NoAgreement as e:
                raise TopologyExpired(str(e))
        return Deferred.fromCoroutine(fetch())

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
    announced as in use and the next one announced ahead.
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
            presence = dict(presence, pubKey=encode_key(self.schedule.in_use(now)))
            if key is not None:
                rotation = {"next_sphinx_key": key, "next_key_from": start}
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
