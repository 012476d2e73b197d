"""What waking up costs a lock-step exchange: a UDP ping-pong between two CPUs, with the answering
side asleep in epoll (as tftpd-hpa, dnsmasq and any event loop wait) or busy-polling first (as
Ingot's TFTP server waits for a lone transfer's ACKs, ``tftp.busy_poll_us``), in one run.

    .venv/bin/python -m bench.udp_wakeup [--round-trips 20000] [--poll-us 200]

The asker is pinned to CPU 0 and the answerer to CPU 1 (two processes, 127.0.0.1 only); the
answerer replies to each 3-byte datagram with a 1472-byte one, the size of a TFTP DATA packet at
blksize 1468. Prints the mean round trip of each way of waiting and their ratio. On a VM whose
idle vCPUs halt (``/sys/module/haltpoll/parameters/guest_halt_poll_ns`` 0, or no haltpoll at
all) the sleeping answerer costs a vCPU wake-up per round trip; on bare metal the gap is the
C-state exit latency, usually smaller.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import time

HOST = "127.0.0.1"
REPLY = b"\x00\x03" + bytes(1470)
TIMEOUT_S = 5.0  # a lost datagram (never on loopback) ends the run instead of hanging it


def answer(sock: socket.socket, count: int, poll_s: float) -> None:
    sock.setblocking(False)
    poller = select.epoll()
    poller.register(sock.fileno(), select.EPOLLIN)
    for _ in range(count):
        got = None
        deadline = time.perf_counter() + poll_s
        while poll_s and time.perf_counter() < deadline:
            try:
                got = sock.recvfrom(64)
                break
            except BlockingIOError:
                pass
        if got is None:
            if not poller.poll(TIMEOUT_S):
                return
            got = sock.recvfrom(64)
        sock.sendto(REPLY, got[1])


def round_trip_us(count: int, poll_s: float) -> float:
    asker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answerer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    asker.bind((HOST, 0))
    answerer.bind((HOST, 0))
    asker.settimeout(TIMEOUT_S)
    pid = os.fork()
    if pid == 0:  # the answerer
        try:
            os.sched_setaffinity(0, {1})
            answer(answerer, count, poll_s)
        finally:
            os._exit(0)
    try:
        os.sched_setaffinity(0, {0})
        target = answerer.getsockname()
        started = time.perf_counter()
        for _ in range(count):
            asker.sendto(b"ack", target)
            asker.recvfrom(2048)
        return (time.perf_counter() - started) / count * 1e6
    finally:
        os.waitpid(pid, 0)
        asker.close()
        answerer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--poll-us", type=int, default=200)
    args = parser.parse_args(argv)
    if not (1000 <= args.round_trips <= 200_000 and 1 <= args.poll_us <= 5000):
        parser.error("--round-trips 1000..200000, --poll-us 1..5000")
    if len(os.sched_getaffinity(0)) < 2:
        print("bench.udp_wakeup needs two CPUs")
        return 2
    sleeping = round_trip_us(args.round_trips, 0.0)
    polling = round_trip_us(args.round_trips, args.poll_us / 1e6)
    print(f"udp ping-pong across CPUs 0 and 1, {args.round_trips} round trips each:")
    print(f"  answerer asleep in epoll (tftpd-hpa, dnsmasq, an event loop): {sleeping:6.1f} us per round trip")
    print(f"  answerer polls {args.poll_us} us first (Ingot TFTP, lone transfer): {polling:6.1f} us per round trip")
    print(f"  ratio: {sleeping / polling:.2f}x fewer microseconds per round trip when polling")
    return 0


if __name__ == "__main__":
    sys.exit(main())
