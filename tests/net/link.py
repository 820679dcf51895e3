"""A slow, lossy link between two network namespaces (RELIABILITY.md §2.5).

The server runs in one namespace and the device in the other, joined by a
veth pair: `tc tbf` limits the bandwidth each way, iptables drops a share of
the packets each way at random, and `nfdelay.py` holds each packet for the
one-way delay. Root only; `missing()` says what this machine lacks.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVER_IP, DEVICE_IP = "10.77.0.2", "10.77.0.1"


@dataclass(frozen=True)
class Profile:
    """rate: each way (tc's units); loss: share of packets dropped each way;
    delay: seconds each way; flap: (seconds down, seconds up), repeated."""
    rate: str
    loss: float
    delay: float
    flap: tuple[float, float] | None = None


# A commune's EDGE/2G signal, as RELIABILITY.md measured it: 64 kbit/s, +500 ms
# round trip, 10 % of packets lost each way; then the same link coming and going.
PROFILES = {
    "2g": Profile("64kbit", 0.10, 0.25),
    "2g-flapping": Profile("64kbit", 0.10, 0.25, flap=(4.0, 4.0)),
}


def missing() -> str | None:
    """Why this machine cannot build the link, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, tc, iptables)"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install -y iproute2 iptables)"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return ("needs NetfilterQueue (apt-get install -y libnetfilter-queue-dev, then "
                "make test-2g installs it)")
    return None


def _run(*argv):
    subprocess.run(argv, check=True, capture_output=True, text=True)


class SlowLink:
    """`with SlowLink(PROFILES["2g"]) as link:` two namespaces and the link."""

    def __init__(self, profile: Profile):
        self.profile = profile
        tag = f"{os.getpid() % 100000}"
        self.server_ns, self.device_ns = f"fss{tag}", f"fsd{tag}"
        self.server_if, self.device_if = f"fss{tag}v", f"fsd{tag}v"
        self._delays: list[subprocess.Popen] = []
        self._flapping = threading.Event()
        self._flapper: threading.Thread | None = None
        self.flaps = 0

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self):
        p, dev, srv = self.profile, self.device_ns, self.server_ns
        _run("ip", "netns", "add", srv)
        _run("ip", "netns", "add", dev)
        _run("ip", "link", "add", self.device_if, "type", "veth", "peer", "name", self.server_if)
        for ns, iface, ip in ((dev, self.device_if, DEVICE_IP), (srv, self.server_if, SERVER_IP)):
            _run("ip", "link", "set", iface, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", iface)
            _run("ip", "-n", ns, "link", "set", iface, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", iface, "root", "tbf",
                 "rate", p.rate, "burst", "4kb", "latency", "2s")
        ipt = ["ip", "netns", "exec", dev, "iptables"]
        if p.loss:
            for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
                _run(*ipt, "-A", chain, flag, self.device_if, "-m", "statistic", "--mode",
                     "random", "--probability", str(p.loss), "-j", "DROP")
        if p.delay:
            # The delay processes first: a packet queued to no one is dropped.
            for queue in (7, 8):
                proc = self.in_device([sys.executable, str(HERE / "nfdelay.py"), str(p.delay),
                                       str(queue)], stdout=subprocess.PIPE, text=True)
                self._delays.append(proc)
                if proc.stdout.readline().strip() != "ready":
                    raise RuntimeError("nfdelay.py did not start")
            _run(*ipt, "-A", "OUTPUT", "-o", self.device_if, "-j", "NFQUEUE", "--queue-num", "7")
            _run(*ipt, "-A", "INPUT", "-i", self.device_if, "-j", "NFQUEUE", "--queue-num", "8")
        if p.flap:
            self._flapper = threading.Thread(target=self._flap, daemon=True)
            self._flapper.start()

    def _flap(self):
        down, up = self.profile.flap
        while not self._flapping.wait(up):
            _run("ip", "-n", self.device_ns, "link", "set", self.device_if, "down")
            self.flaps += 1
            self._flapping.wait(down)
            _run("ip", "-n", self.device_ns, "link", "set", self.device_if, "up")

    def in_server(self, argv, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.server_ns, *argv], **kwargs)

    def in_device(self, argv, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.device_ns, *argv], **kwargs)

    def __exit__(self, *exc):
        self._flapping.set()
        if self._flapper is not None:
            self._flapper.join(15)
        # The NFQUEUE rules go before the processes that serve them.
        subprocess.run(["ip", "netns", "exec", self.device_ns, "iptables", "-F"],
                       capture_output=True)
        for proc in self._delays:
            proc.kill()
            proc.wait()
        for ns in (self.server_ns, self.device_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        time.sleep(0.1)  # the veth pair goes with its namespaces
