"""A python-zeroconf peer for tests/e2e/test_mdns_zeroconf.py, run inside a test network namespace.

  mdns_zeroconf_peer.py publish --ip 10.0.0.1 --name zc-node --host zc-host --port 6000 --txt id=zc1
  mdns_zeroconf_peer.py browse --ip 10.0.0.2

Prints one JSON line per event ("ready", "added", "updated", "removed", "unregistered") with a
CLOCK_MONOTONIC time "t"; stops (publish: with a goodbye) on SIGTERM.
"""
import argparse
import json
import signal
import socket
import threading
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

SERVICE = "_exo-node._tcp.local."


def out(**fields):
    fields["t"] = time.monotonic()
    print(json.dumps(fields), flush=True)


def decode(value):
    return None if value is None else value.decode("utf-8", "replace")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["publish", "browse"])
    parser.add_argument("--ip", required=True, help="the only interface address zeroconf uses")
    parser.add_argument("--name", default="zc-node")
    parser.add_argument("--host", default="zc-host")
    parser.add_argument("--port", type=int, default=6000)
    parser.add_argument("--txt", action="append", default=[])
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    zc = Zeroconf(interfaces=[args.ip], ip_version=IPVersion.V4Only)
    if args.mode == "publish":
        properties = {}
        for entry in args.txt:
            key, _, value = entry.partition("=")
            properties[key] = value
        info = ServiceInfo(SERVICE, f"{args.name}.{SERVICE}", addresses=[socket.inet_aton(args.ip)],
                           port=args.port, properties=properties, server=f"{args.host}.local.")
        zc.register_service(info)
        out(event="ready", name=info.name)
        stop.wait()
        zc.unregister_service(info)
        out(event="unregistered")
    else:
        def on_change(zeroconf, service_type, name, state_change):
            if state_change is ServiceStateChange.Removed:
                out(event="removed", name=name)
                return
            info = zeroconf.get_service_info(service_type, name, timeout=3000)
            kind = "added" if state_change is ServiceStateChange.Added else "updated"
            if info is None:
                out(event=kind, name=name, resolved=False)
                return
            out(event=kind, name=name, resolved=True, port=info.port, server=info.server,
                addresses=info.parsed_addresses(),
                properties={decode(k): decode(v) for k, v in info.properties.items()})

        browser = ServiceBrowser(zc, SERVICE, handlers=[on_change])
        out(event="ready")
        stop.wait()
        browser.cancel()
    zc.close()


if __name__ == "__main__":
    main()
