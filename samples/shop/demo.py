"""The shop sample end to end in one command: `python demo.py`.

Starts `fnrun run` for this folder on a free port, places two orders through
the /checkout webhook (one with a card that is declined), waits until the
flow has settled, then prints the history and the dead letter and stops.
Needs fnrun installed in the Python that runs it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ORDERS = [
    {"id": "ord-1001", "items": {"mug": 2, "tee": 1}, "card": "4242424242424242",
     "email": "ada@example.com"},
    {"id": "ord-1002", "items": {"poster": 1}, "card": "4000000000000000",
     "email": "bob@example.com"},
]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, ValueError):
            pass  # not up yet
        time.sleep(0.1)
    sys.exit(f"demo: timed out waiting for {what} (see out/fnrun.log)")


def fnrun(*args):
    subprocess.run([sys.executable, "-m", "runtime", *args, "--project", HERE], check=True)


def main():
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    if os.geteuid() == 0:  # handlers of a root fnrun run as nobody: out/ must be theirs too
        os.chmod(os.path.join(HERE, "out"), 0o1777)
    log = open(os.path.join(HERE, "out", "fnrun.log"), "ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "runtime", "run", "--project", HERE, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        wait_for("fnrun to start", lambda: request(f"{base}/_/health")[0] == 200)
        print(f"fnrun is serving on {base} (logs: out/fnrun.log)\n")
        for order in ORDERS:
            status, answer = request(f"{base}/checkout", order)
            print(f"POST /checkout {order['id']} -> {status} {json.dumps(answer)}")

        def settled():
            dead = request(f"{base}/_/dead-letters")[1]
            receipts = os.path.join(HERE, "out", "receipts.jsonl")
            return any(d["function"] == "charge-card" for d in dead) and os.path.exists(receipts)

        wait_for("the orders to settle", settled)
        print("\n$ fnrun history")
        fnrun("history")
        print("\n$ fnrun dead-letters list")
        fnrun("dead-letters", "list")
        with open(os.path.join(HERE, "out", "receipts.jsonl"), encoding="utf-8") as receipts:
            print("\nout/receipts.jsonl:\n" + receipts.read())
        print("Replay the dead letter once the card works: fnrun dead-letters replay --all")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=40)
        log.close()


if __name__ == "__main__":
    main()
