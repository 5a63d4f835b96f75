"""The floors: the least a program must do for each figure, run as whole processes.

Each mode is what a competent hand-written beanstalkd program would do, and
imports nothing from glowtools:

    floors.py put-raw HOST:PORT TUBE FILE        pipelined puts on a raw socket
    floors.py put-greenstalk HOST:PORT TUBE FILE one greenstalk put per line
    floors.py dispatch HOST:PORT TUBE COUNT      reserve, spawn, wait, delete
                                                 (COUNT 0: until a reserve waits 1 s)
"""

import socket
import subprocess
import sys

WINDOW = 512


def put_raw(address: str, tube: str, path: str) -> None:
    """Puts every line of `path` as a body, a window of puts per round trip."""
    with open(path, "rb") as stream:
        bodies = [line.rstrip(b"\n") for line in stream if line.strip()]
    sock = socket.create_connection(_split(address))
    reader = sock.makefile("rb")
    sock.sendall(b"use %s\r\n" % tube.encode())
    reader.readline()
    for start in range(0, len(bodies), WINDOW):
        window = bodies[start : start + WINDOW]
        sock.sendall(
            b"".join(b"put 1024 0 120 %d\r\n%s\r\n" % (len(b), b) for b in window)
        )
        for _ in window:
            if not reader.readline().startswith(b"INSERTED"):
                sys.exit("floors.py: a put was refused")
    sock.close()


def put_greenstalk(address: str, tube: str, path: str) -> None:
    """Puts every line of `path` as a body with greenstalk, one round trip each."""
    import greenstalk

    with open(path, "rb") as stream:
        bodies = [line.rstrip(b"\n") for line in stream if line.strip()]
    with greenstalk.Client(_split(address), encoding=None, use=tube) as client:
        for body in bodies:
            client.put(body)


def dispatch(address: str, tube: str, count: int) -> None:
    """Reserves `count` jobs, runs /bin/true for each and deletes it.

    With `count` 0, runs until no job comes for a second.
    """
    import greenstalk

    with greenstalk.Client(_split(address), encoding=None, watch=tube) as client:
        done = 0
        while done < count or not count:
            try:
                job = client.reserve(timeout=None if count else 1)
            except greenstalk.TimedOutError:
                return
            subprocess.run(["/bin/true"])
            client.delete(job)
            done += 1


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    mode, address, tube, arg = sys.argv[1:5]
    if mode == "put-raw":
        put_raw(address, tube, arg)
    elif mode == "put-greenstalk":
        put_greenstalk(address, tube, arg)
    elif mode == "dispatch":
        dispatch(address, tube, int(arg))
    else:
        sys.exit(f"floors.py: unknown mode {mode!r}")
