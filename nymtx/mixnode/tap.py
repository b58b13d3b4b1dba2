"""twistd plugin ``nym-mixnode``: options, and a MixnodeServer assembled from config.toml."""

import os

import attrs
from twisted.python import usage

from nymtx.cli import LogLevelOption, usage_error
from nymtx.mixnode.config import ConfigError, load_config
from nymtx.mixnode.service import MixnodeServer, build_parts


def _workers(value):
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise usage.UsageError(f"--workers must be a number from 1 to 256, not {value!r}")
    return n


class Options(LogLevelOption, usage.Options):
    synopsis = "--id ID [--home DIR]"
    longdesc = ("Run the mixnode ID, set up earlier with 'nym-mixnode init'"
                " (its files are under <home>/mixnodes/ID/).")
    optParameters = [
        ["id", None, None, "The id given to 'nym-mixnode init'."],
        ["home", None, None, "The config root (default: $NYM_HOME or ~/.nym)."],
        ["workers", None, None,
         "Processes that unwrap packets (default: [debug] workers, 1).", _workers],
    ]

    def postOptions(self):
        if not self["id"]:
            raise usage.UsageError("--id is required: the id given to 'nym-mixnode init'")
        # Reading the config here turns every problem in it into a usage
        # error with its message, rather than a traceback from makeService.
        try:
            self.config = load_config(self["id"], self["home"])
            if self["workers"] is not None:
                self.config = attrs.evolve(
                    self.config, debug=dict(self.config.debug, workers=self["workers"]))
            self.keys = self.config.load_keys()
            self.identity = self.config.load_identity()
            # a packet seen before a restart is refused after it
            from nymtx.trust.wiring import all_directories, check_pins, replay_log
            debug = self.config.debug
            check_pins(all_directories(debug["presence_directory_server"],
                                       debug["presence_directory_servers"]),
                       debug["directory_keys"], debug["directory_threshold"],
                       "[debug] directory_keys")
            self.replays = replay_log(os.path.dirname(self.config.private_sphinx_key_file),
                                      self.config.debug["replay_cache_size"])
        except ConfigError as e:
            raise usage_error(e)


def service_from_config(config, keys, reactor, identity=None, replays=None):
    """Assemble a MixnodeServer from *config* (a MixnodeConfig): its parts
    (nymtx.mixnode.service.build_parts, with *replays*, the replay log kept
    across restarts, as the replay cache), the signing directory client,
    and the trust layer's admission for layers 2 and 3."""
    from nymtx.trust.wiring import all_directories, hand_over, node_directory
    debug = config.debug
    if identity is None:
        identity = config.load_identity()
    # every presence and report goes out signed, to each directory
    directory = node_directory(reactor, all_directories(
        debug["presence_directory_server"], debug["presence_directory_servers"]), identity,
        debug["directory_keys"], debug["directory_threshold"])
    parts = build_parts(
        reactor, keys, config.listen_endpoint, replay_cache=replays,
        replay_cache_size=debug["replay_cache_size"],
        max_in_flight=debug["maximum_packets_in_flight"],
        max_delay=debug["maximum_packet_delay"] / 1000,
        queue_size=debug["packet_queue_size"],
        initial_backoff=debug["packet_forwarding_initial_backoff"] / 1000,
        maximum_backoff=debug["packet_forwarding_maximum_backoff"] / 1000,
        max_connections=debug["maximum_connections"],
        idle_timeout=debug["connection_idle_timeout"] / 1000,
        workers=debug["workers"])
    service = MixnodeServer(
        reactor, keys, config.layer, parts, config.announce_address.host,
        announce_port=config.announce_address.port, directory=directory,
        presence_interval=debug["presence_sending_delay"] / 1000,
        metrics_interval=debug["metrics_sending_delay"] / 1000,
        location=config.location)
    hand_over(service, directory)
    if replays is not None:
        # as the gateway's: the log's file is closed with the node
        from nymtx.trust.wiring import OnStop
        OnStop(replays.close).setServiceParent(service)
    # trust hook: rotating Sphinx keys. Only with a directory to announce
    # them to: a node announcing nowhere is known by its key file alone,
    # which must then stay its key
    if config.rotation_interval and directory is not None:
        from nymtx.trust.keyring import KeyringError, enable_rotation
        from nymtx.trust.wiring import OnStop
        try:
            keyring = enable_rotation(service, os.path.dirname(config.private_sphinx_key_file),
                                      reactor, config.rotation_interval)
        except KeyringError as e:
            raise ConfigError(str(e))
        OnStop(keyring.close).setServiceParent(service)
    if debug["directory_keys"] and directory is not None:
        from nymtx.trust.admission import guard_mixnode
        guard_mixnode(service, directory, reactor)
    return service


def makeService(options, reactor=None):
    if reactor is None:
        from twisted.internet import reactor
    return service_from_config(options.config, options.keys, reactor, options.identity,
                               options.replays)
