"""Hold every packet of one NFQUEUE queue for a fixed time, then let it go.

The kernel here has no netem (RELIABILITY.md §2.5), so the 2G link's latency
comes from iptables sending each packet to this queue. Run inside the
namespace whose iptables rules name the queue:

    python nfdelay.py SECONDS QUEUE_NUMBER

It prints "ready" once bound. Packets queued while it is not running are
dropped, so the rules must go before it stops (tests/net/link.py does).
"""
import heapq
import itertools
import sys
import threading
import time

from netfilterqueue import NetfilterQueue


def main():
    delay, queue = float(sys.argv[1]), int(sys.argv[2])
    held, order, due = [], itertools.count(), threading.Condition()

    def hold(packet):
        packet.retain()
        with due:
            heapq.heappush(held, (time.monotonic() + delay, next(order), packet))
            due.notify()

    def release():
        while True:
            with due:
                while not held or held[0][0] > time.monotonic():
                    due.wait(held[0][0] - time.monotonic() if held else None)
                _, _, packet = heapq.heappop(held)
            packet.accept()

    threading.Thread(target=release, daemon=True).start()
    nfq = NetfilterQueue()
    nfq.bind(queue, hold, max_len=4096)
    print("ready", flush=True)
    try:
        nfq.run()
    finally:
        nfq.unbind()


if __name__ == "__main__":
    main()
