"""Record MLflow's own answers to the search scenario, next to this file.

    pip install 'mlflow==3.17.2'   # the full server, into this environment only (not in pyproject)
    python tests/server/mlflow_compat/record_search.py

It starts MLflow's server (`python -m mlflow server`, from the environment running this script)
on a free loopback port with a fresh SQLite store in a temporary directory, replays
search_scenario.QUERIES after building its data set, and writes search_answers.json.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from tests.server.mlflow_compat import search_scenario  # noqa: E402

START_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
OUT = HERE / "search_answers.json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                   f"sqlite:///{tmp}/mlflow.db", "--artifacts-destination", f"{tmp}/artifacts",
                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
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
            answers = search_scenario.run(url)
        finally:
            server.terminate()
            server.wait(timeout=STOP_TIMEOUT)
    record = {
        "mlflow_version": mlflow.__version__,
        "command": "python -m mlflow server --backend-store-uri sqlite:///<tmp>/mlflow.db "
        "--artifacts-destination <tmp>/artifacts --host 127.0.0.1 --port <free> --workers 1",
        "recorded_by": "python tests/server/mlflow_compat/record_search.py",
        "answers": answers,
    }
    OUT.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {OUT} ({len(answers)} answers)")


if __name__ == "__main__":
    main()
