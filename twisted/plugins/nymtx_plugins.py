# One ServiceMaker per tapname; the work lives in each tap module, which is
# imported only when twistd runs that plugin.
from twisted.application.service import ServiceMaker

nym = ServiceMaker(
    "nymtx client", "nymtx.client.tap",
    "A mixnet client with a websocket or TCP API", "nym")
nymMixnode = ServiceMaker(
    "nymtx mixnode", "nymtx.mixnode.tap",
    "A mixnode: delays and forwards Sphinx packets", "nym-mixnode")
nymGateway = ServiceMaker(
    "nymtx gateway", "nymtx.gateway.tap",
    "A store-and-forward gateway for mixnet clients", "nym-gateway")
nymDirectory = ServiceMaker(
    "nymtx directory", "nymtx.directory.tap",
    "The directory: node presence and topology", "nym-directory")
nymLocalnet = ServiceMaker(
    "nymtx localnet", "nymtx.localnet",
    "A whole mixnet on 127.0.0.1", "nym-localnet")
