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


COLUMNS = 120


def lines_of(raw):
    """The terminal's bytes as text lines: escape sequences dropped, a line ended by a line
    feed, a carriage return, or the terminal's own wrap at COLUMNS (a display pads each of
    its lines to the full width and lets the terminal wrap)."""
    text = ESCAPES.sub(b"", raw).decode("utf-8", errors="replace")
    out, col = [], 0
    for ch in text:
        if ch in "\r\n":
            out.append("\n")
            col = 0
            continue
        if col == COLUMNS:
            out.append("\n")
            col = 0
        out.append(ch)
        col += 1
    return "".join(out)


def main():
    raw_out, text_out, command = sys.argv[1], sys.argv[2], sys.argv[3:]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
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
    with open(text_out, "w", encoding="utf-8") as f:
        f.write(lines_of(bytes(raw)))
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
