"""Send a message to yourself through a running nymtx network.

    nym-localnet &                       # or any directory + mixnodes + gateway
    python examples/embed.py http://127.0.0.1:8080

Creates (or reuses) the client "embed-example" under $NYM_HOME (default
~/.nym), sends one message to its own address and prints what comes back.
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from nymtx.client import ClientConfig, MixnetClient, init_client
from nymtx.client.config import is_initialised
from nymtx.paths import nym_root


async def main(reactor, directory="http://127.0.0.1:8080"):
    root = nym_root()
    if is_initialised(root, "embed-example"):
        config = ClientConfig.load(root, "embed-example")
    else:
        config = await init_client(reactor, root, "embed-example", directory,
                                   average_packet_delay=50, fetch_message_delay=200,
                                   message_sending_average_delay=100,
                                   loop_cover_traffic_average_delay=500)
    client = MixnetClient(reactor, config)
    await client.start()
    print("my address:", client.address)

    received = Deferred()
    client.on_message(lambda message: received.called or received.callback(message))
    # CLIENT@GATEWAY reaches us even before the gateway's presence lists us.
    await client.send(client.full_address, "hello through the mixnet")
    print("sent; waiting for it to come back")
    print("received:", (await received).decode("utf-8", "replace"))
    await client.stop()


if __name__ == "__main__":
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, *sys.argv[1:])))
