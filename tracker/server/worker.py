"""One worker of a multi-process `tracker server`: serves the socket its parent bound."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys

from tracker.server.cli import CONFIG_ENV, SHUTDOWN_TIMEOUT_ENV, SOCKET_FD_ENV, serve
from tracker.server.config import ServerConfig


def main() -> int:
    config = ServerConfig(**json.loads(os.environ[CONFIG_ENV]))
    sock = socket.socket(fileno=int(os.environ[SOCKET_FD_ENV]))
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s worker {os.getpid()} %(levelname)s %(message)s"
    )
    return serve(config, sock, float(os.environ[SHUTDOWN_TIMEOUT_ENV]))


if __name__ == "__main__":
    sys.exit(main())
