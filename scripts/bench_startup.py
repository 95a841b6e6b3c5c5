"""Startup: the built zipapp from exec to the first 200 on /health, vs hypercorn-trio with the same imports."""

from __future__ import annotations

import http.client
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import (
    SHIV_ROOT,
    Row,
    floor_argv,
    floor_env,
    free_port,
    gateway_config,
    gateway_env,
    row,
    zipapp_argv,
)


def _first_200(port: int, proc: subprocess.Popen[bytes], t0: float, timeout: float = 60.0) -> float:
    """Seconds from `t0` to the first 200 on /health (polled every 2 ms)."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering /health")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        finally:
            conn.close()
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"no 200 on /health within {timeout} s")
        time.sleep(0.002)


def _time_start(argv: list[str], env: dict[str, str], port: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _first_200(port, proc, t0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(quick: bool = False) -> list[Row]:
    """Warm starts (the zipapp already extracted, the database already migrated), interleaved, medians."""
    reps = 2 if quick else 9
    with tempfile.TemporaryDirectory(prefix="gw-bench-start-") as d:
        tmp = Path(d)
        port = free_port()
        config = gateway_config(tmp, port=port)
        env = gateway_env(tmp, SHIV_ROOT=str(SHIV_ROOT))
        argv = zipapp_argv(config)
        floor_cmd, fenv = floor_argv(port), floor_env()
        _time_start(argv, env, port)  # the first start extracts the zipapp and migrates the database: not warm
        _time_start(floor_cmd, fenv, port)
        floors, gws = [], []
        for _ in range(reps):
            floors.append(_time_start(floor_cmd, fenv, port))
            gws.append(_time_start(argv, env, port))
    floor, value = statistics.median(floors), statistics.median(gws)
    return [
        row(
            "startup of the zipapp to the first 200 on /health (warm)",
            round(value * 1000),
            "ms",
            floor=round(floor * 1000),
            floor_name="in-process hypercorn-trio with all the gateway's imports",
            ratio=value / floor,
            target="≤ 1.3 x floor",
            met=value / floor <= 1.3,
            note=f"median of {reps}",
        )
    ]


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
