"""The nymtx client, for Twisted programs and for the ``nym-client`` command.

See docs/embedding.md. The names below are the embedding API.
"""

from nymtx.client.config import ClientConfig, ConfigError
from nymtx.client.connect import connect
from nymtx.client.core import ClientStopped, SendError
from nymtx.client.embed import InitError, MixnetClient, init_client
from nymtx.client.service import ClientLauncher, ClientService

__all__ = ["ClientConfig", "ConfigError", "SendError", "ClientStopped", "InitError",
           "MixnetClient", "init_client", "connect", "ClientService", "ClientLauncher"]
