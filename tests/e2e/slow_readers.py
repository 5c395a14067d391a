"""Slow readers of large downloads, through the transparent listener's pass-through.

In the test's network namespace: a server on ADDR:443 sends data as fast as each connection takes
it; N clients (this process, whose port-443 connections the capture rule sends to Envoy) connect
to it and never read. After SECONDS, prints how many bytes the server got rid of per connection:
what the kernel and Envoy between them buffered. Usage: slow_readers.py ADDR N SECONDS
"""
from __future__ import annotations

import json
import socket
import sys
import threading
import time

CHUNK = b"x" * (256 * 1024)


def serve(listener: socket.socket, sent: list[int], stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        i = len(sent)
        sent.append(0)
        threading.Thread(target=flood, args=(conn, sent, i, stop), daemon=True).start()


def flood(conn: socket.socket, sent: list[int], i: int, stop: threading.Event) -> None:
    conn.settimeout(0.5)
    while not stop.is_set():
        try:
            sent[i] += conn.send(CHUNK)
        except socket.timeout:
            continue  # the reader is not reading: everything between us is full
        except OSError:
            return


def main(addr: str, n: int, seconds: float) -> None:
    stop = threading.Event()
    sent: list[int] = []
    listener = socket.create_server((addr, 443))
    threading.Thread(target=serve, args=(listener, sent, stop), daemon=True).start()
    clients = []
    for _ in range(n):
        c = socket.create_connection((addr, 443), timeout=5)
        c.sendall(b"GET /big-download HTTP/1.1\r\nHost: downloads.example\r\n\r\n")
        clients.append(c)  # and never read
    print("ready", flush=True)
    time.sleep(seconds)
    stop.set()
    print(json.dumps({"sent": sent}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
