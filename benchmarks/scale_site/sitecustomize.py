"""Lifts a gateway's registration limits in scale_bench's own network.

scale_bench puts this folder on the path of the network it starts (and of
nothing else) with NYMTX_BENCH_OPEN_REGISTRATION=1: hundreds of clients
registering from 127.0.0.1 in a minute are exactly what a gateway's
per-source and total limits refuse (nymtx.gateway.private_server), and
nothing else in the network changes. A real deployment never has this.
"""

import os

if os.environ.get("NYMTX_BENCH_OPEN_REGISTRATION") == "1":
    try:
        from nymtx.gateway import private_server
    except ImportError:  # a nymtx without the private link: no limits to lift
        pass
    else:
        defaults = list(private_server.RegistrationLimit.__init__.__defaults__)
        # per-source burst and total burst: more than any run registers
        defaults[0] = defaults[2] = 1 << 20
        private_server.RegistrationLimit.__init__.__defaults__ = tuple(defaults)
