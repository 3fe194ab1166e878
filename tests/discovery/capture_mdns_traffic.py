"""Captures real mDNS traffic between exo's mdns_tool and python-zeroconf inside two throw-away
network namespaces, and saves each distinct packet as fuzz seeds:
  tests/fuzz/corpus/dns_message/live_<n>   raw packets
  tests/fuzz/corpus/mdns_engine/live_<n>   the same, framed for mdns_engine_fuzz
  ([control 0][2-byte length][packet]; one file also replays everything in order).

Run as root from the repository root:
  EXO_MDNS_TOOL=build/tests/mdns_tool python tests/discovery/capture_mdns_traffic.py
Nothing is sent outside the namespaces it creates.
"""
import hashlib
import pathlib
import struct
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "e2e"))
import mdns_netns  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]
CAPTURE = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("", 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("224.0.0.251") + socket.inet_aton(sys.argv[1]))
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, _ = s.recvfrom(9000)
    except socket.timeout:
        continue
    sys.stdout.write(data.hex() + "\n")
    sys.stdout.flush()
"""


def main():
    pair = mdns_netns.NetnsPair.__new__(mdns_netns.NetnsPair)
    try:
        mdns_netns.NetnsPair.__init__(pair)
    except BaseException as error:  # pytest.skip raises an exception type of its own
        sys.exit(f"cannot make namespaces: {error}")
    procs = []
    try:
        capture = subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable, "-c", CAPTURE,
                                    pair.ip_b, "6"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.3)
        tool = mdns_netns.mdns_tool_path()
        procs.append(subprocess.Popen(["ip", "netns", "exec", pair.a, tool,
                                       f"--interface={pair.dev_a}", "--publish=exo node",
                                       "--host=exo-a", "--port=50051", "--txt=id=aaa",
                                       "--txt=ckf=f00d", "--browse", "--duration=4"]))
        procs.append(subprocess.Popen(["ip", "netns", "exec", pair.b, sys.executable,
                                       str(REPO / "tests/e2e/mdns_zeroconf_peer.py"), "publish",
                                       "--ip", pair.ip_b, "--name", "zc node", "--txt", "id=zc"],
                                      stdout=subprocess.DEVNULL))
        time.sleep(3)
        procs[1].terminate()
        out, _ = capture.communicate(timeout=10)
    finally:
        for proc in procs:
            proc.wait(timeout=10)
        pair.close()
    packets = []
    for line in out.split():
        packet = bytes.fromhex(line)
        if packet not in packets:
            packets.append(packet)
    raw_dir = REPO / "tests/fuzz/corpus/dns_message"
    engine_dir = REPO / "tests/fuzz/corpus/mdns_engine"
    engine_dir.mkdir(parents=True, exist_ok=True)
    framed_all = b""
    for packet in packets:
        digest = hashlib.sha1(packet).hexdigest()[:12]
        (raw_dir / f"live_{digest}").write_bytes(packet)
        framed = bytes([0]) + struct.pack("!H", len(packet)) + packet
        (engine_dir / f"live_{digest}").write_bytes(framed)
        framed_all += bytes([4]) + framed[1:]
    (engine_dir / "live_session").write_bytes(framed_all)
    print(f"saved {len(packets)} distinct packets")


if __name__ == "__main__":
    main()
