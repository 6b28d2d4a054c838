"""Runs a command with its stderr on a pseudo-terminal and its stdout on a pipe, as a user
at a terminal who redirects the summary would (tests/progress.rs).

usage: pty_run.py RAW_OUT TEXT_OUT COMMAND [ARGS...]

The terminal is 120 columns by 40 rows with TERM=xterm-256color. Everything the command
wrote to the terminal goes to RAW_OUT as written (escape sequences included); TEXT_OUT gets
the same with every escape sequence removed and each carriage return or line feed made a
line break, so each line is one drawn frame line or one log line. The command's stdout is
copied to ours; we exit with its exit code (128 + N when signal N ended it).
"""

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

ESCAPES = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, line clears
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    rb"|\x1b[@-Z\\-_]"  # other two-byte escapes
)


def main():
    raw_out, text_out, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, TERM="xterm-256color")
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
    )
    os.close(slave)
    raw = bytearray()
    out = bytearray()
    open_fds = {master, child.stdout.fileno()}
    while open_fds:
        ready, _, _ = select.select(list(open_fds), [], [])
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                chunk = b""
            if not chunk:
                open_fds.discard(fd)
            elif fd == master:
                raw += chunk
            else:
                out += chunk
    code = child.wait()
    os.close(master)
    with open(raw_out, "wb") as f:
        f.write(raw)
    text = ESCAPES.sub(b"", bytes(raw)).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    with open(text_out, "wb") as f:
        f.write(text)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
