"""The code in docs/embedding.md's testing section runs as written."""

import re
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial import reporter, runner
from twisted.trial.unittest import SynchronousTestCase

DOC = Path(__file__).parent.parent / "docs" / "embedding.md"


def python_blocks():
    text = DOC.read_text()
    section = text[text.index("## Testing your code against it"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


class TestingSectionTests(SynchronousTestCase):
    def test_the_example_test_case_passes(self):
        [block] = [b for b in python_blocks() if "class MyAppTests" in b]
        namespace = {"__name__": "embedding_doc"}
        exec(compile(block, str(DOC), "exec"), namespace)
        result = reporter.TestResult()
        runner.TestLoader().loadClass(namespace["MyAppTests"]).run(result)
        self.assertEqual((result.errors, result.failures), ([], []))
        self.assertEqual(result.successes, 2)

    def test_the_client_built_by_hand_runs(self):
        from nymtx.client import ClientConfig, MixnetClient
        from nymtx.keys import KeyPair, encode_key
        from nymtx.testing import FakeDirectory, FakeGatewayLink, FakeLinks, FakeNetwork
        [block] = [b for b in python_blocks() if "ClientConfig.new(" in b]
        network = FakeNetwork()
        namespace = dict(
            root=self.mktemp(), network=network, clock=Clock(), KeyPair=KeyPair,
            ClientConfig=ClientConfig, encode_key=encode_key, FakeNetwork=FakeNetwork,
            MixnetClient=MixnetClient, FakeDirectory=FakeDirectory, FakeLinks=FakeLinks,
            FakeGatewayLink=FakeGatewayLink)
        exec(compile(block, str(DOC), "exec"), namespace)
        client, keys = namespace["client"], namespace["keys"]
        network.clients.append(keys.public_key)
        self.successResultOf(client.start())
        self.assertEqual(client.address, keys.public_text)
        # network.client_config builds the same thing
        config, _ = network.client_config(self.mktemp(), "Alice")
        self.assertEqual(
            {name: getattr(config, name) for name in ("provider_id", "provider_authtoken",
                                                      "socket_type")},
            {name: getattr(client.config, name) for name in ("provider_id",
                                                             "provider_authtoken",
                                                             "socket_type")})
        self.successResultOf(client.stop())
