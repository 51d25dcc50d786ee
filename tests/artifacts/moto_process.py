"""moto's threaded S3 server in a process of its own (prints its port; serves until stdin closes)."""

from __future__ import annotations

import sys

from moto.server import ThreadedMotoServer


def main(port: int) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    print(server.get_host_and_port()[1], flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
