#!/usr/bin/env python3
"""A CRM bridge behind wxkf-manager: receives the signed `subscribe` push of
an Official Account, checks its Standard Webhooks signature, "creates the
customer", and welcomes the follower with a customer-service message sent
through the manager's WeChat API proxy. It never holds the AppSecret.

Python 3.9+, standard library only. Configuration (environment):

  WXKF_MANAGER          the manager's base URL, e.g. http://127.0.0.1:7777
  WXKF_APP_ID           the Official Account's appId
  WXKF_APP_KEY          a key issued for it (POST /admin/api/apps/{appId}/keys)
  WXKF_WEBHOOK_SECRET   the subscription's secret (whsec_...)
  LISTEN                host:port to listen on (default 127.0.0.1:8900)

Run:  python3 examples/crm_bridge.py
"""

import base64
import hashlib
import hmac
import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MANAGER = os.environ["WXKF_MANAGER"].rstrip("/")
APP_ID = os.environ["WXKF_APP_ID"]
APP_KEY = os.environ["WXKF_APP_KEY"]
SECRET = base64.b64decode(os.environ["WXKF_WEBHOOK_SECRET"].removeprefix("whsec_"))
TOLERANCE_S = 5 * 60  # older (or newer) deliveries are refused: no replays

customer_numbers = itertools.count(1001)
customers = {}  # openid -> customer number; a real CRM has a database


def signed_by_manager(headers, body):
    """Standard Webhooks: v1,base64(HMAC-SHA256(secret, "{id}.{ts}.{body}"))."""
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    if not msg_id or not timestamp.isdigit():
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_S:
        return False
    mac = hmac.new(SECRET, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    expected = "v1," + base64.b64encode(mac.digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


def welcome(openid, number):
    """Send the welcome message through the manager's proxy (it adds the token)."""
    message = {
        "touser": openid,
        "msgtype": "text",
        "text": {"content": f"Welcome! Your customer number is {number}."},
    }
    request = urllib.request.Request(
        f"{MANAGER}/wechat/{APP_ID}/api/cgi-bin/message/custom/send",
        data=json.dumps(message).encode(),
        headers={"Authorization": f"Bearer {APP_KEY}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


class Bridge(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if not signed_by_manager(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        push = json.loads(body)
        message = push["message"]
        if message.get("MsgType") == "event" and message.get("Event") == "subscribe":
            openid = message["FromUserName"]
            # The same webhook-id comes again on a retry: create the customer once.
            number = customers.setdefault(openid, next(customer_numbers))
            try:
                answer = welcome(openid, number)
            except (urllib.error.URLError, OSError) as e:
                print(f"welcome for {openid} failed: {e}; the manager will retry", file=sys.stderr)
                self.send_response(503)
                self.end_headers()
                return
            print(f"customer {number} for {openid}; WeChat answered {answer}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    host, port = os.environ.get("LISTEN", "127.0.0.1:8900").rsplit(":", 1)
    print(f"CRM bridge listening on {host}:{port}", flush=True)
    ThreadingHTTPServer((host, int(port)), Bridge).serve_forever()
