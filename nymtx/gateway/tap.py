"""``twistd nym-gateway``: options, and a GatewayService assembled from config.toml."""

from twisted.python import usage

from nymtx.cli import LogLevelOption, Unusable, usage_error
from nymtx.gateway import config as C
from nymtx.gateway.service import GatewayService, check_store
from nymtx.gateway.store import StoreError
from nymtx.keys import KeyFormatError, KeyPair


class Options(LogLevelOption, usage.Options):
    synopsis = "--id ID [--home DIR]"
    longdesc = ("A nymtx gateway: the final hop of the mixnet, which stores each "
                "registered client's mail until the client pulls it. Initialise it "
                "first with `nym-gateway init --id ID`.")

    optParameters = [
        ["id", None, None, "The gateway's id (its directory under <home>/gateways/)."],
        ["home", None, None, "The config root (default $NYM_HOME or ~/.nym)."],
    ]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required")
        try:
            self["config"] = C.load(self["id"], self["home"])
        except (C.ConfigError, ValueError) as e:
            raise usage_error(e)
        data = C.data_dir(self["id"], self["home"])
        try:
            self["keys"] = KeyPair.load(data)
        except KeyFormatError as e:
            raise Unusable(f"gateway {self['id']!r}: {e}")
        try:
            # here, not in makeService: twistd then says why in one line
            from twisted.internet import reactor
            check_store(reactor, data)
        except StoreError as e:
            raise Unusable(f"gateway {self['id']!r}: {e}")
        self["data_dir"] = data
        from nymtx.trust.wiring import all_directories, check_pins, replay_log
        config = self["config"]
        try:
            check_pins(all_directories(config.directory, config.more_directories),
                       config.directory_keys, config.directory_threshold,
                       "[debug] directory_keys")
            # a packet seen before a restart is refused after it
            self["replays"] = replay_log(data)
        except C.ConfigError as e:
            raise Unusable(f"gateway {self['id']!r}: {e}")
        from nymtx.trust.wiring import node_identity
        try:
            self["identity"] = node_identity(data)
        except (KeyFormatError, OSError) as e:
            raise Unusable(f"gateway {self['id']!r}: identity key: {e}")


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    from nymtx.gateway.private_server import RegistrationLimit
    from nymtx.trust.wiring import all_directories, hand_over, node_directory
    config = options["config"]
    # every presence goes out signed, to each directory
    directory = node_directory(
        reactor, all_directories(config.directory, config.more_directories),
        options["identity"], config.directory_keys, config.directory_threshold)
    service = GatewayService(
        reactor, options["keys"], options["data_dir"],
        config.mix_endpoint(), config.client_endpoint(), config.announce_host,
        directory=directory,
        quota_messages=config.quota_messages, quota_bytes=config.quota_bytes,
        commit_interval=config.commit_interval_ms / 1000, commit_batch=config.commit_batch,
        ack_hold=config.ack_delay_ms / 1000,
        max_pull=config.message_retrieval_limit, max_clients=config.max_clients,
        presence_interval=config.presence_sending_delay_ms / 1000,
        mix_max_connections=config.mix_max_connections,
        mix_idle_timeout=config.mix_idle_timeout_ms / 1000,
        client_max_connections=config.client_max_connections,
        client_handshake_timeout=config.client_handshake_timeout_ms / 1000,
        client_idle_timeout=config.client_idle_timeout_ms / 1000,
        location=config.location,
        registration_idle=config.registration_idle_hours * 3600.0,
        admission=RegistrationLimit(
            reactor, per_source_burst=config.registration_per_source_burst,
            per_source_seconds=config.registration_per_source_interval,
            total_burst=config.registration_total_burst,
            total_seconds=config.registration_total_interval))
    hand_over(service, directory)
    from nymtx.trust.wiring import OnStop
    service.handler.replay_cache = options["replays"]
    OnStop(options["replays"].close).setServiceParent(service)
    # trust hook: rotating Sphinx keys, announced to the directories (a
    # gateway announcing nowhere is known by its name key alone)
    if config.rotation_interval and directory is not None:
        from nymtx.trust.keyring import KeyringError, enable_rotation
        try:
            keyring = enable_rotation(service, options["data_dir"], reactor,
                                      config.rotation_interval)
        except KeyringError as e:
            raise Unusable(f"gateway {config.id!r}: {e}")
        OnStop(keyring.close).setServiceParent(service)
    if config.directory_keys and directory is not None:
        from nymtx.trust.admission import guard_mix_port
        guard_mix_port(service, directory, reactor)
    return service
