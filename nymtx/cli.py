"""One command-line layer: every ``nym-*`` command parses and exits the same way.

Flags are parsed by ``twisted.python.usage.Options`` (the same classes
twistd uses for the plugins), checked with the validators of
:mod:`nymtx.config`, and the exit status means one thing everywhere:

- 0: done (``--help`` included);
- 1: the command line was right, but what it asked could not be done: a
  config file missing or bad, an id that exists, no directory, a port in use;
- 2: the command line is wrong (an unknown command or flag, a flag's value
  refused, a flag missing): one line saying why and the usage on stderr.

The twistd plugins (``twistd nym``, ``nym-mixnode``, ``nym-gateway``,
``nym-directory``, ``nym-localnet``) exit the same way: twistd gets their
Options through :func:`twistd_options` (twisted/plugins/nymtx_plugins.py).
"""

import sys

from twisted.python import usage

from nymtx import config as shared
from nymtx.config import ConfigError, ConfigFileError


class Unusable(usage.UsageError):
    """The flags are right but what they name cannot be used (a config file).

    A ``usage.UsageError``, so that twistd reports it as it reports any bad
    option; the ``nym-*`` commands exit 1 for it rather than 2.
    """


def usage_error(error):
    """The UsageError to raise from ``postOptions`` for a ConfigError."""
    if isinstance(error, ConfigFileError):
        return Unusable(str(error))
    return usage.UsageError(str(error))


def coerce(check, flag, **kwargs):
    """An ``optParameters`` coercer running *check* (a nymtx.config validator) on the text.

    It raises UsageError itself: from a ValueError, usage.Options would put
    "Parameter type enforcement failed:" before the message.
    """
    def parse(text):
        try:
            return shared.from_text(check, text, flag, **kwargs)
        except ConfigError as e:
            raise usage.UsageError(str(e))
    parse.coerceDoc = ""
    return parse


class LogLevelOption:
    """Mixed into an Options class: ``--log-level``, overriding the config's [logging] level.

    ``options["log-level"]`` is None unless the flag was given; use
    :func:`log_level` to resolve it against the config.
    """

    optParameters = [
        ["log-level", None, None,
         f"Log events at this level and above: {', '.join(shared.LOG_LEVELS)}"
         f" (default: the config's [logging] level, else {shared.DEFAULT_LOG_LEVEL}).",
         coerce(shared.log_level, "--log-level")],
    ]


def log_level(options, config=None):
    """The level to log at: the flag, else the config's ``[logging] level``, else info.

    *config* defaults to the one the Options read (``options["config"]`` or
    ``options.config``, as the nodes' tap Options keep it), so that twistd's
    plugins and the commands resolve the level the same way; give it to
    ``nymtx.logfilter.filter_log`` or ``level_filter``.
    """
    flag = options.get("log-level") if hasattr(options, "get") else None
    if flag:
        return flag
    if config is None:
        config = (options.get("config") if hasattr(options, "get") else None) \
            or getattr(options, "config", None)
    return getattr(config, "log_level", None) or shared.DEFAULT_LOG_LEVEL


class Command(usage.Options):
    """The top level of a command with subcommands (init, run); *name* is the command's."""

    name = "nym"

    def getSynopsis(self):
        # a subcommand's --help prints this, then the subcommand and its synopsis
        if self.subCommand is not None:
            return f"Usage: {self.name}"
        return f"Usage: {self.name} {self.synopsis}"

    def postOptions(self):
        if self.subCommand is None:
            raise usage.UsageError(
                "give a command: " + " or ".join(c[0] for c in self.subCommands))


class TwistdUsage:
    """Mixed into a plugin's Options under twistd: the exit statuses of the commands.

    twistd's ``app.run`` prints its own usage and exits 1 on any UsageError
    a plugin's Options raise, so a wrong flag would look like a runtime
    failure. Here a usage error prints the plugin's usage and one line
    saying why on stderr and exits 2; an :class:`Unusable` (a config file
    that cannot be used: a runtime failure) prints that line and exits 1.
    ``--help`` still exits 0. *tapname* names the plugin in the message.
    """

    tapname = "nym"

    def getSynopsis(self):
        # twistd's line, whatever the command's own Options print (nym-directory's
        # and nym-localnet's name their command)
        return f"Usage: twistd [options] {self.tapname} {getattr(self, 'synopsis', '[options]')}"

    def parseOptions(self, options=None):
        try:
            super().parseOptions(options)
        except Unusable as e:
            print(f"twistd {self.tapname}: error: {e}", file=sys.stderr)
            raise SystemExit(1)
        except usage.UsageError as e:
            print(str(self), file=sys.stderr)
            print(f"twistd {self.tapname}: error: {e}\n"
                  f"Try 'twistd {self.tapname} --help' for more.", file=sys.stderr)
            raise SystemExit(2)


def twistd_options(options_class, tapname):
    """*options_class* with :class:`TwistdUsage` mixed in, as twistd's plugin
    *tapname* offers it. Only twistd gets it: the ``nym-*`` commands parse
    the same classes through :func:`run`, which reports errors itself."""
    return type(options_class.__name__, (TwistdUsage, options_class),
                {"tapname": tapname, "__module__": options_class.__module__,
                 "__doc__": options_class.__doc__})


def run(name, options, argv, action, synopsis=None):
    """Parse *argv* into *options*, then return ``action(options)``'s exit status.

    Usage errors are 2, a config file that cannot be used and a ConfigError
    raised by *action* are 1, each one line on stderr without a traceback.
    """
    try:
        options.parseOptions(sys.argv[1:] if argv is None else list(argv))
    except Unusable as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
    except usage.UsageError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        print(f"usage: {name} {synopsis or getattr(options, 'synopsis', '[options]')}\n"
              f"Try '{name} --help' for more.", file=sys.stderr)
        return 2
    try:
        return action(options)
    except ConfigError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
