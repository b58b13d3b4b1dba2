"""Free loopback ports for tests that must name a port before binding it
(a node initialised from a config, a subprocess given a base port)."""

import random
import socket


def _free(port):
    probe = socket.socket()
    try:
        probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def free_ports(count=1):
    """The first of *count* consecutive ports free on 127.0.0.1 right now.

    Searched below 32768, under Linux's ephemeral range, so that no
    outgoing connection of another test takes one between this check and
    the bind (a fixed port in the 36000s could be taken that way).
    """
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 32768 - count)
        if all(_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no run of {count} free ports found")
