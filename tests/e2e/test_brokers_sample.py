"""samples/orders-brokers runs with its one command: orders in from RabbitMQ, results out to Kafka.

The sample folder is copied to tmp_path (its run writes .fnrun/ and out/ there);
`python run.py` starts Tansu, declares and empties the orders queue, runs
`fnrun run`, publishes five orders and prints each result read back from Kafka.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest

from tests.runtime.brokers.rigs import listening

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "orders-brokers"


def test_the_orders_sample_prices_every_order_and_exports_it_to_kafka(
    tmp_path: Path, service_missing: Callable[[str], NoReturn]
) -> None:
    if not listening(5672):
        service_missing("RabbitMQ is not running on 127.0.0.1:5672")
    folder = tmp_path / "orders-brokers"
    shutil.copytree(SAMPLE, folder)
    folder.chmod(0o1777)  # a root supervisor's workers run as nobody (README, Isolation)
    done = subprocess.run([sys.executable, "run.py"], cwd=folder, capture_output=True,
                          text=True, timeout=150, check=False)
    out = done.stdout
    log = (folder / "out" / "fnrun.log").read_text() if (folder / "out").exists() else ""
    assert done.returncode == 0, f"{out}\n{done.stderr}\n{log}"
    results = [line for line in out.splitlines() if line.startswith("result")]
    assert len(results) == 5
    assert sum("fulfilment.priced" in line for line in results) == 4
    assert sum('fulfilment.rejected {"order"' in line and '"jam"' in line for line in results) == 1
    assert '"total": "12.20"' in out  # 2 tea at 4.50 and a cake at 3.20
