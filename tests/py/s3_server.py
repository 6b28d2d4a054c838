"""The S3-compatible server of the tests (moto), bound to a port the kernel picks: the
socket is bound here before anything is printed, so no other process can take the port
between choosing it and listening on it. Prints `listening on http://127.0.0.1:PORT` as
its first stdout line, then serves until SIGTERM or SIGINT. Started by scripts/test.sh."""
import signal
import sys
import threading

from moto.moto_server.threaded_moto_server import ThreadedMotoServer


def main():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"listening on http://{host}:{port}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    sys.exit(main())
