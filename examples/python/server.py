#!/usr/bin/env python3
"""Serve an "Arith" service to amqprpc clients from Python with pika, following PROTOCOL.md.

    python3 server.py [namespace]      (or AMQPRPC_NAMESPACE; default "arith")

The broker URL comes from AMQP_URL. It prints "ready" once it consumes, and
serves until interrupted. Arith has the methods of Go's net/rpc example:

    Arith.Add     {"A": int, "B": int} -> A + B
    Arith.Divide  {"A": int, "B": int} -> {"Quo": A / B, "Rem": A % B}, an error if B is 0
    amqprpc.Ping  anything -> the same bytes, in the same content type (as every amqprpc server)
    Trace.Parent  anything -> {"TraceID": ..., "ParentID": ...}: the caller's span, read from the
                  W3C traceparent header that a Go client with OpenTelemetry sends (PROTOCOL.md,
                  "Trace context"); an error if the request has none
"""
import json
import os
import sys

import pika

URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NS = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("AMQPRPC_NAMESPACE", "arith")


class CallError(Exception):
    """The text of an error reply."""


def ints(args):
    """A and B of an {"A": int, "B": int} args object; missing fields are 0, as in Go."""
    if not isinstance(args, dict) or not args.keys() & {"A", "B"}:
        raise CallError('args must be an object with fields "A" and "B"')
    a, b = args.get("A", 0), args.get("B", 0)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
        raise CallError('"A" and "B" must be integers')
    return a, b


def add(args):
    a, b = ints(args)
    return a + b


def divide(args):
    a, b = ints(args)
    if b == 0:
        raise CallError("divide by zero")
    quo = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)  # truncated, as Go divides
    return {"Quo": quo, "Rem": a - b * quo}


def trace_parent(headers):
    """The trace id and parent span id of a W3C traceparent header: version-traceid-parentid-flags.
    An OpenTelemetry SDK for Python would hand it to its propagator instead."""
    value = (headers or {}).get("traceparent")
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        raise CallError("no traceparent header")
    return {"TraceID": parts[1], "ParentID": parts[2]}


METHODS = {"Arith.Add": add, "Arith.Divide": divide}
# Methods that read the request's headers rather than its args.
HEADER_METHODS = {"Trace.Parent": trace_parent}


def main():
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    ch = conn.channel()
    request_exchange, response_exchange = f"rpc_{NS}_request", f"rpc_{NS}_response"
    request_queue = request_exchange
    # Declared exactly as the Go side declares them (PROTOCOL.md, "Broker objects").
    ch.exchange_declare(request_exchange, "direct", durable=True)
    ch.exchange_declare(response_exchange, "direct", durable=True)
    ch.queue_declare(request_queue, durable=True)
    ch.queue_bind(request_queue, request_exchange, routing_key="")
    ch.confirm_delivery()  # basic_publish now waits for the broker's confirm
    ch.basic_qos(prefetch_count=16)

    def on_request(ch, deliver, req, body):
        if not req.reply_to or not req.correlation_id or not req.type:
            ch.basic_reject(deliver.delivery_tag, requeue=False)  # nowhere to answer
            return
        reply = pika.BasicProperties(
            type=req.type,
            correlation_id=req.correlation_id,
            content_type="application/json",
            delivery_mode=req.delivery_mode,
            expiration=req.expiration,  # a reply is worth no more than its request
        )
        malformed = False
        if req.type == "amqprpc.Ping":  # the reserved echo (PROTOCOL.md, "The reserved service amqprpc")
            reply.content_type = req.content_type
            ch.basic_publish(response_exchange, req.reply_to, body, reply)
            ch.basic_ack(deliver.delivery_tag)
            return
        try:
            media_type = (req.content_type or "").split(";")[0].strip().lower()
            if media_type != "application/json":
                malformed = True
                raise CallError(f"request has unknown content type {json.dumps(req.content_type or '')}")
            method = METHODS.get(req.type)
            if method is None and req.type not in HEADER_METHODS:
                raise CallError(f"rpc: can't find method {req.type}")
            try:
                args = json.loads(body)
            except ValueError as e:
                malformed = True
                raise CallError(f"decoding args: {e}")
            if method is None:
                result = json.dumps(HEADER_METHODS[req.type](req.headers)).encode()
            else:
                result = json.dumps(method(args)).encode()
        except CallError as e:
            reply.headers = {"error": str(e).encode()[:16384].decode("utf-8", "ignore")}  # at most 16384 bytes
            result = b""
        try:
            ch.basic_publish(response_exchange, req.reply_to, result, reply)
        except pika.exceptions.NackError:  # the broker refused the reply: do not run the call again
            ch.basic_reject(deliver.delivery_tag, requeue=False)
            return
        # Settle only once the reply is confirmed: a crash before this redelivers the request.
        if malformed:
            ch.basic_reject(deliver.delivery_tag, requeue=False)
        else:
            ch.basic_ack(deliver.delivery_tag)

    ch.basic_consume(request_queue, on_request)
    print("ready", flush=True)
    try:
        ch.start_consuming()
    except KeyboardInterrupt:
        pass
    finally:
        if conn.is_open:
            conn.close()


if __name__ == "__main__":
    main()
