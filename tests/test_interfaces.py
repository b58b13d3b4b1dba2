"""Every real collaborator and every fake of it provide the same interface.

``verifyObject`` checks that each method and attribute the interface names
exists with a compatible signature, so a fake that drifts from the real
class (as FakeLinks.sent once did: a list where PacketLinks has a dict)
fails here instead of making a test pass against the wrong shape.
"""

import ast
from pathlib import Path

import nymtx

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import providedBy
from zope.interface.verify import verifyClass, verifyObject

from nymtx import interfaces, testing
from nymtx.addressing import NodeAddress
from nymtx.client import MixnetClient
from nymtx.client.api import ApiDispatcher
from nymtx.client.connect import ResolvingClient
from nymtx.client.core import ClientCore
from nymtx.client.inbox import Inbox
from nymtx.directory.client import DirectoryClient
from nymtx.gateway.link import GatewayLink
from nymtx.gateway.store import MailboxStore
from nymtx.interfaces import (IApiDispatcher, IClientCore, IDirectoryClient, IGatewayLink,
                              IInbox, IMailboxStore, IMixnetClient, IPacketLinks)
from nymtx.keys import KeyPair
from nymtx.links import PacketLinks
from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork
from nymtx.trust.client import SigningDirectoryClient, TrustedDirectoryClient
from tests.test_client_api import FakeCore
from tests.test_client_core import RecordingInbox
from tests.test_fetch_delivery import InboxCore
from tests.test_log_noise import _LoopBack

TESTS = Path(__file__).parent
#: the installed package (tests run against it, not against a source tree)
PACKAGE = Path(nymtx.__file__).parent

#: fakes in tests/ that stand for no nymtx collaborator, and why
NOT_COLLABORATORS = {
    # stands for the standard library's resource module (raise_fd_limit's argument)
    "FakeResource",
    # stand for Twisted's process transport and spawnProcess (a WorkerPool's
    # spawn); they run the real worker code (nymtx.mixnode.worker) in-process
    "FakeWorkerProcess", "FakeSpawner",
}


class InterfaceTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.network = FakeNetwork()
        self.config, _ = self.network.client_config(self.mktemp(), "Alice")

    def client(self, cls=MixnetClient):
        client = cls(self.clock, self.config, directory=FakeDirectory(self.network.topology),
                     links=FakeLinks(), gateway_link=FakeGatewayLink())
        self.addCleanup(client.inbox.close)
        return client

    def inbox(self, cls=Inbox, *args):
        inbox = cls(*args, ":memory:", self.clock)
        self.addCleanup(inbox.close)
        return inbox

    def store(self):
        store = MailboxStore.open(self.clock, self.mktemp())
        self.addCleanup(store.close)
        return store

    def pairs(self):
        """(interface, real object, [fakes]) for every swappable collaborator."""
        client = self.client()
        address = NodeAddress.parse("127.0.0.1:1")
        return [
            (IPacketLinks, PacketLinks(self.clock),
             [FakeLinks(), _LoopBack(FakeNetwork(), FakeGatewayLink())]),
            (IDirectoryClient, DirectoryClient("http://127.0.0.1:1", reactor=self.clock),
             [FakeDirectory()]),
            (IGatewayLink, GatewayLink(self.clock, address, KeyPair.generate(), b"t" * 32),
             [FakeGatewayLink()]),
            (IMailboxStore, self.store(), []),
            (IInbox, self.inbox(), [self.inbox(RecordingInbox, [])]),
            (IClientCore, client.core, [FakeCore(), InboxCore(self.inbox())]),
            (IApiDispatcher, ApiDispatcher(client.core), []),
            (IMixnetClient, client, []),
        ]

    def more_real(self):
        """(interface, real object) for the other real classes of an interface."""
        return [
            (IMixnetClient, self.client(ResolvingClient)),
            (IDirectoryClient, TrustedDirectoryClient([], None, self.clock)),
            (IDirectoryClient, SigningDirectoryClient(FakeDirectory(), None, self.clock)),
        ]

    def test_every_real_class_and_every_fake_provides_its_interface(self):
        everything = [(i, [real] + fakes) for i, real, fakes in self.pairs()]
        everything += [(i, [real]) for i, real in self.more_real()]
        for interface, objects in everything:
            for obj in objects:
                with self.subTest(interface=interface.__name__, obj=type(obj).__name__):
                    self.assertTrue(interface.providedBy(obj),
                                    f"{type(obj).__name__} does not declare {interface.__name__}")
                    verifyObject(interface, obj)
                    verifyClass(interface, type(obj))

    def test_every_interface_has_its_real_class_here(self):
        covered = {interface for interface, _, _ in self.pairs()}
        declared = {value for value in vars(interfaces).values()
                    if isinstance(value, type(IInbox)) and value is not interfaces.Interface}
        self.assertEqual(declared, covered)

    def test_the_real_classes_are_the_documented_ones(self):
        for interface, cls in [(IPacketLinks, PacketLinks), (IDirectoryClient, DirectoryClient),
                               (IGatewayLink, GatewayLink), (IMailboxStore, MailboxStore),
                               (IInbox, Inbox), (IClientCore, ClientCore),
                               (IApiDispatcher, ApiDispatcher), (IMixnetClient, MixnetClient)]:
            self.assertTrue(interface.implementedBy(cls), cls.__name__)

    def test_every_class_of_nymtx_declaring_an_interface_is_verified_here(self):
        """A new real class with @implementer(I...) must be verified above too."""
        names = {name for name in vars(interfaces) if name.startswith("I")}
        declared = set()
        for path in PACKAGE.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef):
                    continue
                for decorator in node.decorator_list:
                    if isinstance(decorator, ast.Call) and getattr(
                            decorator.func, "id", None) == "implementer" and any(
                            getattr(arg, "id", None) in names for arg in decorator.args):
                        declared.add(node.name)
        objects = [real for _, real, _ in self.pairs()] + \
            [fake for _, _, fakes in self.pairs() for fake in fakes] + \
            [real for _, real in self.more_real()]
        verified = {type(obj).__name__ for obj in objects}
        self.assertEqual(declared - verified, set())
        self.assertIn("SigningDirectoryClient", declared)  # the scan finds them

    def test_every_fake_in_nymtx_testing_provides_an_interface(self):
        for name in testing.__all__:
            cls = getattr(testing, name)
            if name.startswith("Fake") and name not in ("FakeNetwork", "FakeRegistrationError"):
                self.assertTrue(list(providedBy(cls.__new__(cls))), name)

    def test_no_other_fake_of_a_collaborator_lives_in_tests(self):
        """A new fake in tests/ must be verified here (or be the one in nymtx.testing)."""
        verified = {type(f).__name__ for _, _, fakes in self.pairs() for f in fakes}
        found = set()
        for path in TESTS.glob("test_*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.ClassDef) or node.name.endswith("Tests"):
                    continue
                bases = {getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}
                # by its name, or by what it is made from (a subclass of a fake)
                if node.name.lstrip("_").startswith(("Fake", "Stub", "Recording", "Dummy")) \
                        or any(b.lstrip("_").startswith(("Fake", "Recording")) for b in bases):
                    found.add(node.name)
        self.assertEqual(found - NOT_COLLABORATORS,
                         verified - set(testing.__all__))

    def test_a_drifted_fake_fails_verification(self):
        # the check can fail: the old FakeLinks had no queued() or connected()
        class OldFakeLinks:
            def __init__(self):
                self.sent = []

            def send(self, address, packet):
                self.sent.append((address, packet))

            def stop(self):
                pass
        from zope.interface.exceptions import Invalid
        self.assertRaises(Invalid, verifyObject, IPacketLinks, OldFakeLinks(), tentative=True)
