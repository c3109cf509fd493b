# The twistd dropin for `twistd stateproto`. Twisted imports every dropin on
# each plugin scan, so this file holds no logic and imports nothing from the
# package: ServiceMaker loads txstateproto.tap by name only when the
# subcommand is used. Keep no __init__.py beside it (Twisted only scans real
# twisted/plugins/ directories without one on sys.path), and keep its name
# globally unique (txstateproto.py would clash with the package).
from twisted.application.service import ServiceMaker

stateproto = ServiceMaker(
    "txstateproto",
    "txstateproto.tap",
    "Serve a txstateproto StateProtocol handler (the line echo by default) "
    "on Twisted server endpoints, with graceful shutdown.",
    "stateproto",
)
