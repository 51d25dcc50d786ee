"""Record MLflow's own answers to the compatibility scenario, next to this file.

    python tests/server/mlflow_compat/record.py

It starts MLflow's server from its own virtualenv ($MLFLOW_VENV, default /opt/mlflow-venv) on
a fresh SQLite store with artifacts proxied to a temporary directory, exactly as `mlflow
server` runs by default, replays scenario.STEPS and writes mlflow-<version>.json.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.server.mlflow_compat import scenario  # noqa: E402

START_TIMEOUT = 180.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    venv = Path(os.environ.get("MLFLOW_VENV", "/opt/mlflow-venv"))
    mlflow = venv / "bin" / "mlflow"
    version = subprocess.run(
        [str(mlflow), "--version"], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split()[-1]
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        command = [str(mlflow), "server", "--backend-store-uri", f"sqlite:///{tmp}/mlflow.db",
                   "--artifacts-destination", f"{tmp}/artifacts", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", "1"]  # fmt: skip
        server = subprocess.Popen(command, cwd=tmp, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    if requests.get(f"{url}/health", timeout=5).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("MLflow's server did not start")
                time.sleep(0.5)
            answers = scenario.run(url)
        finally:
            server.terminate()
            server.wait(timeout=60)
    out = HERE / f"mlflow-{version}.json"
    record = {
        "mlflow_version": version,
        "command": "mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db "
        "--artifacts-destination <tmp>/artifacts --host 127.0.0.1 --port <free> --workers 1",
        "recorded_by": "python tests/server/mlflow_compat/record.py",
        "answers": answers,
    }
    out.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    print(f"wrote {out} ({len(answers)} answers)")


if __name__ == "__main__":
    main()
