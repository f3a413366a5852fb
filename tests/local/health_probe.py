"""Poll `/health` until stdin closes; print the latencies (seconds) as one JSON list.

Run as its own process by the concurrency test: timed from a process of its
own, the answers measure the server, not the test's threads fighting for the GIL.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import httpx


def main(url: str, interval: float = 0.05) -> None:
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=5) as client:
        client.get("/health")  # connect first: measure answers, not the handshake
        print("ready", flush=True)
        while not done.wait(interval):
            started = time.perf_counter()
            response = client.get("/health")
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                latencies.append(float("inf"))
    print(json.dumps(latencies), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
