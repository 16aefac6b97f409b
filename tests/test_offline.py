"""`./run.sh test` runs the suite in a network namespace with loopback only: prove that it is offline there."""

import os
import socket
import threading

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("STM_NETNS") != "1",
                                reason="only inside ./run.sh test's network namespace")


def test_outside_addresses_are_unreachable():
    for host, port in [("151.101.0.223", 443), ("1.1.1.1", 53)]:  # pypi.org (Fastly), a public resolver
        with pytest.raises(OSError):
            socket.create_connection((host, port), timeout=3).close()
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)


def test_loopback_works():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    threading.Thread(target=lambda: server.accept()[0].sendall(b"ok"), daemon=True).start()
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        assert c.recv(2) == b"ok"
    server.close()
