#!/usr/bin/env python3
"""A stand-in for WeChat's API (api.weixin.qq.com), to try the CRM bridge on
one machine: `cgi-bin/stable_token` hands out a token; every other call is
printed and answered `{"errcode": 0, "errmsg": "ok"}`. Point the manager at
it with WECHAT_API_BASE=http://127.0.0.1:8901.

Run:  python3 examples/wechat_stand_in.py [port]
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandIn(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.startswith("/cgi-bin/stable_token"):
            answer = {"access_token": "STAND-IN-TOKEN", "expires_in": 7200}
        else:
            print(f"WeChat got {self.path}: {body.decode(errors='replace')}", flush=True)
            answer = {"errcode": 0, "errmsg": "ok"}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8901
    print(f"WeChat stand-in on 127.0.0.1:{port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), StandIn).serve_forever()
