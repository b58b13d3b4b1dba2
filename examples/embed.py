"""Send a message to yourself through a running nymtx network.

    nym-localnet &                       # or any directory + mixnodes + gateway
    python examples/embed.py http://127.0.0.1:8080

Creates (or reuses) the client "embed-example" under $NYM_HOME (default
~/.nym), sends one message to its own address and prints what comes back.
tests/test_connect.py runs ``main`` against a local network.
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from nymtx.client import connect
from nymtx.paths import nym_root

#: milliseconds, as config.toml's [debug]: quicker than nym's defaults
SETTINGS = dict(average_packet_delay=50, fetch_message_delay=200,
                message_sending_average_delay=100, loop_cover_traffic_average_delay=500)


async def main(reactor, directory="http://127.0.0.1:8080", root=None, say=print):
    # initialises the client the first time (keys, a gateway), loads it after
    client = await connect(reactor, root or nym_root(), "embed-example", directory, **SETTINGS)
    try:
        say("my address:", client.address)
        received = Deferred()
        client.on_message(lambda message: received.called or received.callback(message))
        # A plain address: a client that registered a moment ago is listed at
        # its gateway's next presence, and send waits for that.
        await client.send(client.address, "hello through the mixnet")
        say("sent; waiting for it to come back")
        text = (await received).decode("utf-8", "replace")
        say("received:", text)
        return text
    finally:
        await client.stop()


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
