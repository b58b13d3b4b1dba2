# One ServiceMaker per tapname; the work lives in each tap module, which is
# imported only when twistd runs that plugin.
from twisted.application.service import ServiceMaker


class _NymServiceMaker(ServiceMaker):
    """twistd's way in: the log shows info and above unless --log-level says
    otherwise, and a usage error exits 2 (nymtx.cli.TwistdUsage).

    Here, not in the tap modules: twistd begins logging right after this
    returns, and tests call the taps' makeService without twistd.
    """

    @property
    def options(self):
        # a usage error exits 2 and a config that cannot be used 1, as the
        # nym-* commands do (twistd itself exits 1 for both)
        from nymtx.cli import twistd_options
        return twistd_options(super().options, self.tapname)

    def makeService(self, options):
        from nymtx.cli import log_level
        from nymtx.logfilter import filter_log
        filter_log(log_level(options))  # --log-level, else config.toml's [logging] level
        return super().makeService(options)


nym = _NymServiceMaker(
    "nymtx client", "nymtx.client.tap",
    "A mixnet client with a websocket or TCP API", "nym")
nymMixnode = _NymServiceMaker(
    "nymtx mixnode", "nymtx.mixnode.tap",
    "A mixnode: delays and forwards Sphinx packets", "nym-mixnode")
nymGateway = _NymServiceMaker(
    "nymtx gateway", "nymtx.gateway.tap",
    "A store-and-forward gateway for mixnet clients", "nym-gateway")
nymDirectory = _NymServiceMaker(
    "nymtx directory", "nymtx.directory.tap",
    "The directory: node presence and topology", "nym-directory")
nymLocalnet = _NymServiceMaker(
    "nymtx localnet", "nymtx.localnet",
    "A whole mixnet on 127.0.0.1", "nym-localnet")
