"""An OpenLineage HTTP receiver on 127.0.0.1 for tests (Python's http.server, independent
of the code under test): every POST's JSON body is appended to OUT as one line
{"path", "authorization", "content_type", "event"}, and answered 201 (or STATUS when
given). Prints `listening on PORT` once it accepts connections.

usage: lineage_receiver.py OUT [STATUS]
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OUT = sys.argv[1]
STATUS = int(sys.argv[2]) if len(sys.argv) > 2 else 201


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        record = {
            "path": self.path,
            "authorization": self.headers.get("Authorization"),
            "content_type": self.headers.get("Content-Type"),
            "event": json.loads(body),
        }
        with open(OUT, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.send_response(STATUS)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening on {server.server_address[1]}", flush=True)
server.serve_forever()
