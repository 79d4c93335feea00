#!/usr/bin/env node
// Call an amqprpc "Arith" service from Node with amqplib, following PROTOCOL.md.
//
//     node client.js [namespace]      (or AMQPRPC_NAMESPACE; default "arith")
//
// The broker URL comes from AMQP_URL. It calls Arith.Add, Arith.Divide and
// Arith.Divide by zero, prints each result and exits 1 if one is not what
// Arith should answer.
'use strict';

const amqp = require('amqplib');
const { randomUUID } = require('node:crypto');
const { isDeepStrictEqual } = require('node:util');

const url = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
const ns = process.argv[2] || process.env.AMQPRPC_NAMESPACE || 'arith';
const timeoutMs = 10000;

class RemoteError extends Error {}

async function dial() {
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  const requestExchange = `rpc_${ns}_request`;
  const responseExchange = `rpc_${ns}_response`;
  // Declared exactly as the Go side declares them (PROTOCOL.md, "Broker objects").
  await ch.assertExchange(requestExchange, 'direct', { durable: true, autoDelete: false });
  await ch.assertExchange(responseExchange, 'direct', { durable: true, autoDelete: false });
  await ch.assertQueue(requestExchange, { durable: true, exclusive: false, autoDelete: false });
  await ch.bindQueue(requestExchange, requestExchange, '');
  // Our reply queue, bound with our client id as routing key.
  const id = randomUUID().replaceAll('-', '');
  const replyQueue = `rpc_${ns}_${id}_response`;
  await ch.assertQueue(replyQueue, {
    durable: true, exclusive: false, autoDelete: false, arguments: { 'x-expires': 300000 },
  });
  await ch.bindQueue(replyQueue, responseExchange, id);

  const pending = new Map(); // correlation id -> { resolve, reject }
  const settle = (correlationId, f) => {
    const p = pending.get(correlationId);
    if (p) {
      pending.delete(correlationId);
      f(p);
    }
  };
  const { consumerTag } = await ch.consume(replyQueue, (msg) => {
    if (msg === null) return; // the broker cancelled the consumer
    ch.ack(msg);
    let error = (msg.properties.headers || {}).error;
    if (Buffer.isBuffer(error)) error = error.toString('utf8');
    settle(msg.properties.correlationId, (p) =>
      error ? p.reject(new RemoteError(error)) : p.resolve(JSON.parse(msg.content.toString('utf8'))));
  });
  // A mandatory request that no queue takes comes back.
  ch.on('return', (msg) => settle(msg.properties.correlationId, (p) =>
    p.reject(new Error(`no queue bound for ${msg.fields.exchange} "${msg.fields.routingKey}"`))));

  async function call(method, args) {
    const correlationId = randomUUID();
    const reply = new Promise((resolve, reject) => {
      pending.set(correlationId, { resolve, reject });
      setTimeout(() => settle(correlationId, (p) =>
        p.reject(new Error(`${method}: no reply within ${timeoutMs} ms`))), timeoutMs).unref();
    });
    ch.publish(requestExchange, '', Buffer.from(JSON.stringify(args)), {
      type: method,
      replyTo: id,
      correlationId,
      messageId: correlationId,
      contentType: 'application/json',
      expiration: String(timeoutMs),
      mandatory: true,
    });
    await ch.waitForConfirms(); // throws if the broker refused the request
    return reply;
  }

  async function close() {
    await ch.cancel(consumerTag);
    await ch.deleteQueue(replyQueue);
    await conn.close();
  }
  return { call, close };
}

async function main() {
  const client = await dial();
  let failures = 0;
  async function check(method, args, want) {
    let got;
    try {
      got = await client.call(method, args);
      console.log(`${method} ${JSON.stringify(args)} = ${JSON.stringify(got)}`);
    } catch (e) {
      if (!(e instanceof RemoteError)) throw e;
      got = e;
      console.log(`${method} ${JSON.stringify(args)} failed: ${e.message}`);
    }
    const ok = want === RemoteError ? got instanceof RemoteError : isDeepStrictEqual(got, want);
    if (!ok) {
      console.log(`  MISMATCH: want ${want === RemoteError ? 'an error' : JSON.stringify(want)}`);
      failures++;
    }
  }
  try {
    await check('Arith.Add', { A: 2, B: 3 }, 5);
    await check('Arith.Divide', { A: 7, B: 2 }, { Quo: 3, Rem: 1 });
    await check('Arith.Divide', { A: 1, B: 0 }, RemoteError);
  } finally {
    await client.close();
  }
  process.exitCode = failures ? 1 : 0;
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
