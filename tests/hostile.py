"""Facts about ../shared/hostile/hostile_server.py that several tests rely on."""

from __future__ import annotations

#: The ``/redirect-to-private/<variant>`` targets that point off the allow-listed port
#: (the canary, a metadata look-alike, non-http schemes), in every spelling the server has.
OFF_LIMITS_VARIANTS = (
    "metadata",
    "loopback",
    "localhost",
    "decimal",
    "hex",
    "octal",
    "short",
    "zero",
    "ipv4-mapped",
    "ipv6-loopback",
    "userinfo",
    "file",
    "gopher",
)
#: Redirects to the server's own port: allowed only where the harness allow-lists that port.
SAME_PORT_VARIANT = "same-port"
