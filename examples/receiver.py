"""A report receiver for the demo: listens on 127.0.0.1, checks each report's HMAC with the
VO's report token (the README's verify_report), and prints one line per report.

    python examples/receiver.py TOKEN PORTFILE     # writes the port it listens on to PORTFILE
"""

import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def verify_report(headers, body, token, max_age=300):
    """The report (a dict) if it came from a VM holding `token`; raises ValueError if not."""
    report_id = headers["X-Contextd-Report-Id"]
    timestamp = headers["X-Contextd-Timestamp"]
    if abs(time.time() - int(timestamp)) > max_age:
        raise ValueError("stale or future timestamp")
    key = hmac.new(token.encode(), b"contextd-report-key/v1:" + report_id.encode(),
                   hashlib.sha256).digest()
    expected = "sha256=" + hmac.new(key, timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, headers["X-Contextd-Signature"]):
        raise ValueError("bad signature")
    report = json.loads(body)
    if report.get("report_id") != report_id:
        raise ValueError("report id does not match its header")
    return report


class Handler(BaseHTTPRequestHandler):
    token = ""

    def do_POST(self):  # http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if "X-Contextd-Signature" in self.headers:
            try:
                report = verify_report(self.headers, body, self.token)
                how = "HMAC verified"
            except (KeyError, ValueError) as exc:
                self.send_response(403)
                self.end_headers()
                print("receiver: %s refused: %s" % (self.path, exc), flush=True)
                return
        else:
            report, how = json.loads(body), "unsigned (site copy)"
        print("receiver: %s got report %s: outcome %s, VO %s, %s" % (
            self.path, report["report_id"], report["outcome"],
            (report.get("payload") or {}).get("vo"), how), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main() -> None:
    Handler.token = sys.argv[1]
    server = HTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[2], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
