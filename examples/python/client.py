#!/usr/bin/env python3
"""Call an amqprpc "Arith" service from Python with pika, following PROTOCOL.md.

    python3 client.py [namespace]      (or AMQPRPC_NAMESPACE; default "arith")

The broker URL comes from AMQP_URL. It calls Arith.Add, Arith.Divide and
Arith.Divide by zero, prints each result and exits 1 if one is not what
Arith should answer.
"""
import json
import os
import sys
import uuid

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQPRPC_NAMESPACE", "arith")
TIMEOUT_MS = 10_000


class RemoteError(Exception):
    """A reply that carried an `error` header."""


class Client:
    def __init__(self, url, ns):
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.ch = self.conn.channel()
        self.request_exchange = f"rpc_{ns}_request"
        response_exchange = f"rpc_{ns}_response"
        # Declared exactly as the Go side declares them (PROTOCOL.md, "Broker objects").
        self.ch.exchange_declare(self.request_exchange, "direct", durable=True)
        self.ch.exchange_declare(response_exchange, "direct", durable=True)
        self.ch.queue_declare(self.request_exchange, durable=True)
        self.ch.queue_bind(self.request_exchange, self.request_exchange, routing_key="")
        # Our reply queue, bound with our client id as routing key.
        self.id = uuid.uuid4().hex
        self.reply_queue = f"rpc_{ns}_{self.id}_response"
        self.ch.queue_declare(self.reply_queue, durable=True, arguments={"x-expires": 300_000})
        self.ch.queue_bind(self.reply_queue, response_exchange, routing_key=self.id)
        self.ch.confirm_delivery()  # basic_publish now waits for the broker's confirm

    def call(self, method, args):
        """Send one call and wait for its reply; raise RemoteError on an error reply."""
        correlation_id = uuid.uuid4().hex
        props = pika.BasicProperties(
            type=method,
            reply_to=self.id,
            correlation_id=correlation_id,
            message_id=correlation_id,
            content_type="application/json",
            expiration=str(TIMEOUT_MS),
        )
        # mandatory: with no request queue bound, pika raises UnroutableError.
        self.ch.basic_publish(self.request_exchange, "", json.dumps(args).encode(), props, mandatory=True)
        for method_frame, reply, body in self.ch.consume(self.reply_queue, inactivity_timeout=TIMEOUT_MS / 1000):
            if method_frame is None:
                raise TimeoutError(f"{method}: no reply within {TIMEOUT_MS} ms")
            self.ch.basic_ack(method_frame.delivery_tag)
            if reply.correlation_id != correlation_id:
                continue  # a late reply to an earlier call: drop it
            error = (reply.headers or {}).get("error")
            if isinstance(error, bytes):
                error = error.decode("utf-8", "replace")
            if error:
                raise RemoteError(error)
            return json.loads(body)

    def close(self):
        self.ch.cancel()
        self.ch.queue_delete(self.reply_queue)
        self.conn.close()


def compact(v):
    return json.dumps(v, separators=(",", ":"))


def main():
    client = Client(URL, NS)
    failures = 0

    def check(method, args, want):
        nonlocal failures
        try:
            got = client.call(method, args)
            print(f"{method} {compact(args)} = {compact(got)}")
        except RemoteError as e:
            got = e
            print(f"{method} {compact(args)} failed: {e}")
        ok = isinstance(got, RemoteError) if want is RemoteError else got == want
        if not ok:
            print(f"  MISMATCH: want {'an error' if want is RemoteError else compact(want)}")
            failures += 1

    try:
        check("Arith.Add", {"A": 2, "B": 3}, 5)
        check("Arith.Divide", {"A": 7, "B": 2}, {"Quo": 3, "Rem": 1})
        check("Arith.Divide", {"A": 1, "B": 0}, RemoteError)
    finally:
        client.close()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
