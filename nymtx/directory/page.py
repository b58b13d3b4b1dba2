"""The HTML page of the live network served at ``GET /``.

Rendered on the server from the same data as the JSON endpoints and
refreshed by the browser every few seconds (a meta refresh: the page has no
script at all). Every value that came from a node is escaped.
"""

from html import escape

REFRESH_SECONDS = 2
NS = 1_000_000_000

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}
code{font-size:.85em}
.empty{color:#999;font-style:italic}
"""


def render(topology, rates, now_ns):
    """The page as UTF-8 bytes.

    *topology* is the registry's topology JSON object, *rates* its
    ``rates()`` (packets per second per mixnode key) and *now_ns* the
    directory's clock, to say how long ago each node was seen.
    """
    mixnodes = topology["MixNodes"]
    gateways = topology["MixProviderNodes"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        "<title>nymtx directory</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>nymtx directory</h1>",
        f"<p>{_count(len(mixnodes), 'mixnode')}, {_count(len(gateways), 'gateway')}, "
        f"{_count(sum(len(g['registeredClients']) for g in gateways), 'registered client')}. "
        f"This page refreshes every {REFRESH_SECONDS} s. Packet rates are averages "
        f"over the last whole minute, totals only (docs/directory.md).</p>",
    ]
    for layer in (1, 2, 3):
        nodes = [m for m in mixnodes if m["layer"] == layer]
        parts.append(f"<h2>Layer {layer}</h2>")
        parts.append(_mixnode_table(nodes, rates, now_ns))
    parts.append("<h2>Gateways</h2>")
    parts.append(_gateway_table(gateways, now_ns))
    parts.append("<p>JSON: <a href=\"api/presence/topology\">topology</a>, "
                 "<a href=\"api/metrics/mixes\">metrics</a>, "
                 "<a href=\"api/healthcheck\">healthcheck</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def _count(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _e(value):
    return escape(str(value), quote=True)


def _ago(last_seen, now_ns):
    return f"{max(0, now_ns - last_seen) / NS:.1f} s ago"


def _rate(value):
    return f"{value:.1f}"


def _mixnode_table(nodes, rates, now_ns):
    if not nodes:
        return '<p class="empty">no mixnodes</p>'
    rows = ["<table><tr><th>host</th><th>public key</th><th>version</th>"
            "<th>location</th><th>last seen</th><th>received/s</th><th>sent/s</th>"
            "<th>dropped/s</th></tr>"]
    for node in nodes:
        rate = rates.get(node["pubKey"])
        cells = [_rate(rate[k]) for k in ("received", "sent", "dropped")] if rate \
            else ["–"] * 3
        rows.append(
            f"<tr><td>{_e(node['host'])}</td><td><code>{_e(node['pubKey'])}</code></td>"
            f"<td>{_e(node['version'])}</td><td>{_e(node.get('location', ''))}</td>"
            f"<td>{_e(_ago(node['lastSeen'], now_ns))}</td>"
            + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _gateway_table(gateways, now_ns):
    if not gateways:
        return '<p class="empty">no gateways</p>'
    rows = ["<table><tr><th>mix listener</th><th>client listener</th>"
            "<th>public key</th><th>version</th><th>location</th><th>last seen</th>"
            "<th>registered clients</th></tr>"]
    for gateway in gateways:
        clients = gateway["registeredClients"]
        listed = "<br>".join(f"<code>{_e(c['pubKey'])}</code>" for c in clients) \
            or '<span class="empty">none</span>'
        rows.append(
            f"<tr><td>{_e(gateway['host'])}</td><td>{_e(gateway['clientListener'])}</td>"
            f"<td><code>{_e(gateway['pubKey'])}</code></td><td>{_e(gateway['version'])}</td>"
            f"<td>{_e(gateway.get('location', ''))}</td>"
            f"<td>{_e(_ago(gateway['lastSeen'], now_ns))}</td>"
            f"<td>{len(clients)}<br>{listed}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)
