// Package amqprpc makes standard net/rpc services callable across processes
// through a RabbitMQ broker (AMQP 0-9-1). It is the Go take on amphora, a
// Python AMQP RPC library, and follows its tutorial and topology.
//
// # Overview
//
// A server registers receivers on a [rpc.Server] as usual and serves them to
// one namespace; any number of server processes can serve the same
// namespace, and the broker shares the calls among them:
//
//	rpc.Register(new(Math))
//	server, err := amqprpc.NewServer(url, "math", nil) // nil: rpc.DefaultServer
//	err = server.Serve(ctx)                           // until ctx ends or Close
//
// A client replaces rpc.Dial with [Dial]; Call and Go work as with
// [rpc.Client], and [Client.CallContext] adds a context:
//
//	client, err := amqprpc.Dial(url, "math")
//	err = client.Call("Math.SumNumbers", []float64{1, 2, 3, 4}, &sum)
//
// Both return once their queues and exchanges exist: a call made before any
// server runs waits in the broker.
//
// [NewClientCodec] and [NewServerCodec] are the underlying net/rpc codecs
// (the [rpc.ClientCodec] and [rpc.ServerCodec] contract), for use with
// [rpc.NewClientWithCodec] and [rpc.ServeCodec] on a connection of your own.
// Note the two meanings of "codec": package codec holds the body encodings
// (msgpack, JSON, gob); a *Codec in this package moves whole calls.
//
// # Topology
//
// For namespace S and a client with id U:
//
//	object             name                 kind
//	request exchange   rpc_S_request        direct, durable
//	response exchange  rpc_S_response       direct, durable
//	request queue      rpc_S_request        durable, bound to rpc_S_request with key ""
//	reply queue        rpc_S_U_response     durable, x-expires (WithReplyQueueExpiry),
//	                                        bound to rpc_S_response with key U
//
// Servers and clients both declare the exchanges and the request queue; a
// request queue that exists already is used as it is, whatever its type
// (an operator's quorum queue, say), and [WithQueueType] chooses the type
// of those they create.
// A request's reply_to is U, a routing key: servers only ever publish
// replies to rpc_S_response.
//
// # Request queues and routing
//
// Besides the main queue, a namespace can have request queues created on
// demand ([Client.CreateRequestQueue], rpc_S_queue_<name>, bound to the
// request exchange with key <name>), for example one per user that some
// server observes. A server handles calls from such a queue with
// [Server.ReceiveFromQueue], which waits for the queue if it does not exist
// yet, takes at most the calls it was asked for, and returns their count.
// A call reaches one with [To] (one call) or [Client.Tune] (every call of a
// method, keyed by its args); other calls go to the main queue. Requests are
// published mandatory: a call whose routing key no queue is bound to fails
// at once with [ErrNoRoute].
//
// # Broadcasting
//
// Package fanout serves and calls fanout namespaces, where every server runs
// each call once and fanout.Client.CallAll gathers every reply. A handler
// can return [ErrIgnoreRequest] to decline a request: a fanout server then
// sends no reply, a direct server lets another server take it.
//
// # Wire format
//
// A call is one message each way, readable in the management UI:
//
//	property        request                         reply
//	type            "Service.Method"                same
//	correlation_id  <random client prefix>.<seq>    copied from the request
//	message_id      same as correlation_id          -
//	reply_to        U                               -
//	content_type    the codec, e.g. application/msgpack (replies use the request's)
//	expiration      the caller's time left, in ms   the request's
//	headers         -                               error: the error text, if any
//	body            args                            reply (empty on error)
//
// PROTOCOL.md in the repository specifies the format for programs in other
// languages, with Python and Node examples that call and serve amqprpc
// namespaces. content_type is a MIME media type: parameters such as
// charset=utf-8 are accepted. An error header that is a non-empty string or
// byte array means failure; absent, empty or null means success.
//
// # Limits and bad input
//
// Names and properties travel as AMQP short strings of at most 255 bytes
// (AMQP 0-9-1 §4.2.5.3): a call whose method name or routing key is longer,
// a queue name, routing key or client id that would make one longer, fail
// at once with [ErrTooLong] and send nothing, because amqp091-go closes the
// whole connection, and every call on it, over a frame it cannot encode.
// Bodies are limited on both sides ([WithMaxBodySize], 4 MiB). A body of
// the wrong shape for the value it decodes into (a map that shares no field
// with the struct, an array where a struct is expected, null where the
// type cannot be nil) is refused, on requests before the handler runs and
// on replies with [ErrBadReply]; unknown extra fields are accepted, so
// either side may add fields. A reply the broker refuses (its queue full
// with overflow reject-publish, say) rejects its request, to the
// dead-letter exchange if the queue has one, instead of running it again.
//
// # Codecs
//
// A [codec.Codec] encodes bodies; msgpack is the default ([WithCodec]). A
// server decodes each request with the codec its content_type names and
// answers in the same one, so clients with different codecs share servers.
// gob is not hardened against hostile input; use it between trusted peers.
//
// # Concurrency
//
// A Client is safe for concurrent use; calls are multiplexed on one reply
// queue with one consumer. A Server runs up to its prefetch ([WithPrefetch],
// default 128) handlers at once, each in its own goroutine (as net/rpc
// does). Publishing never waits for broker confirms inside net/rpc's write
// lock: confirms are handled asynchronously.
//
// # Delivery guarantees
//
// A server acks a request only after the broker confirmed its reply. If the
// server dies before that, the broker redelivers the request to another
// server. A server remembers the calls it answered recently
// ([WithDedupWindow]): a request it sees again, redelivered after a lost
// connection or published again by a client that lost the broker's
// confirm or its reply queue, is answered again with the reply kept from
// the first run ([WithReplyCache]) without running twice. A call is known
// by its reply_to, message_id, correlation_id, type, content_type and
// body together, so two different calls are never taken for one. A
// duplicate that reaches another
// server process, or a restarted one, does run again: delivery is
// at-least-once, and handlers should tolerate that. A malformed request is
// answered with an error where it has a reply address and rejected without
// requeue; a panicking handler is answered with an error. Requests and
// replies are transient unless [WithPersistent] is given.
//
// # Deadlines
//
// [Client.CallContext] returns ctx.Err() as soon as ctx ends and frees the
// call; a late reply is dropped. The remaining time travels as the
// request's expiration, so a request nobody waits for expires in the
// broker. Call, Go and contexts without deadline use the default call
// timeout ([WithCallTimeout], 60 s).
//
// # Errors
//
// A handler's error crosses the wire as text and reaches the caller as an
// [rpc.ServerError], as in net/rpc; so does an unknown method, or args the
// server could not read. Failures of the client's own are other error
// values, which a handler's text cannot imitate: Call and CallContext
// time-outs match context.DeadlineExceeded with errors.Is, and the others
// match [ErrNoRoute], [ErrRefused], [ErrTooLong], [ErrTooLarge] or
// [ErrBadReply]; a Go call's Error is the same value. Calls on a closed
// client fail with [rpc.ErrShutdown]. Broker errors are wrapped, so errors.As(err,
// new(*amqp.Error)) works.
//
// # Observability
//
// Clients and servers trace and measure every call with OpenTelemetry,
// through the global providers unless [WithTracerProvider],
// [WithMeterProvider] and [WithPropagator] give others: a client span per
// call, whose context travels in the request's AMQP headers (W3C
// traceparent with propagation.TraceContext), a server span per request
// as its child, held by a context-aware handler's ctx, and the RPC
// metrics rpc.client.duration and rpc.server.duration (ms) with body
// sizes and amqprpc's own counters. Names follow the OpenTelemetry
// semantic conventions v1.37.0; the README's "Observability" lists them.
// Without providers set, spans do not record and metrics are not
// recorded; what remains costs a few allocations per call (the README
// gives the measured cost).
//
// # Shutdown and connections
//
// [Server.Close] (or the end of Serve's context) stops taking requests,
// waits for running handlers to reply, and lets unstarted requests go back
// to the queue. [Client.Close] fails pending calls with rpc.ErrShutdown.
// Both are idempotent and stop every goroutine they started.
//
// # Shared connections
//
// Each Dial and NewServer opens two connections of its own. Many clients
// and servers in one process can share one pair instead: open it with
// transport.Dial and pass it with [WithConnection] (and an empty url).
// They then use channels on it; closing them leaves it open.
//
// # Reconnection
//
// Clients and servers use two connections each, one to publish and one to
// consume, so that a broker blocking publishers cannot stop deliveries, each
// to any of the URLs given (a comma-separated list of a cluster's nodes,
// tried in a random order on every dial), with AMQP heartbeats ([WithHeartbeat], 10 s) to notice a dead peer. When a
// connection drops they dial again (with backoff and jitter), declare their
// topology again and resume consuming; requests and replies the broker had
// not confirmed are published again, and calls made meanwhile wait for the
// connection up to their deadline. Replies wait in the client's durable reply
// queue. A request whose server lost its connection mid-call is redelivered
// and may run again. A client whose reply queue is deleted, or expired
// while it was away, declares it again and publishes its pending calls
// again (not its broadcasts: CallAll gathers what still arrives); a server
// that ran one answers the copy from its reply cache, another server runs
// it. Codecs made with NewClientCodec and NewServerCodec on a
// connection of your own do not reconnect.
//
// # Clusters
//
// Give every side all the nodes' URLs and make the request queues quorum
// queues ([WithQueueType]): a quorum queue stays available while a majority
// of its nodes run, so no call fails when one node stops. A classic queue
// lives on one node, and while that node is down it cannot be reached:
// calls routed to it are held and published again until it is back or
// their deadline ends them with [ErrQueueUnavailable]; servers wait for
// it. Reply queues are classic, on the client's node: when that node is
// down the client moves its reply queue to a new name (rpc_S_U_response.1,
// .2, ..., bound with the same key U) on the node it reconnected to,
// publishes its pending calls again, and deletes the old queue once its
// node is back. A fanout server's own queue moves the same way, to a new
// id.
package amqprpc

import (
	"context"
	"errors"
	"net/rpc"

	"github.com/amqprpc/amqprpc/internal/link"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// Dial connects to the broker at url (amqp:// or amqps://), declares the
// namespace's request side and the client's own reply queue, and returns a
// client ready for its first call: no sleep is needed, and a call made
// before any server runs waits in the broker until one does (or until its
// deadline, when the request expires).
//
// url may list the nodes of a cluster, separated by commas
// ("amqp://u:p@node1:5672/,amqp://u:p@node2:5672/"), each with its own
// credentials and TLS scheme. Every dial, the first and each one after a
// lost connection, tries them in a new random order until one answers;
// the error of a failed first dial names each (without passwords).
//
// Dial opens two connections, one to publish and one to consume, so that a
// broker that blocks publishers cannot stop replies from arriving. Dial
// blocks until the topology is declared. Close releases everything.
func Dial(url, namespace string, opts ...Option) (*Client, error) {
	o, n, err := prepare(namespace, opts)
	if err != nil {
		return nil, err
	}
	id := o.id()
	pubConn, subConn, closeConns, err := connections(url, o, "amqprpc client "+id)
	if err != nil {
		return nil, err
	}
	cc, err := newClientCodecOn(pubConn, subConn, n, id, o, closeConns)
	if err != nil {
		_ = closeConns()
		return nil, err
	}
	return &Client{rc: rpc.NewClientWithCodec(cc), codec: cc, conn: subConn}, nil
}

// connections returns the publishing and consuming connections a Client or
// Server runs on, and the func that closes them: the shared ones of
// WithConnection, which it leaves open, or two of its own to url, named
// name unless WithConnectionName says otherwise.
func connections(url string, o *options, name string) (pub, sub *transport.Conn, closeConns func() error, err error) {
	if o.conn != nil {
		if url != "" {
			return nil, nil, nil, errors.New("amqprpc: both a url and WithConnection: give one")
		}
		pub, sub = link.Conns(o.conn)
		return pub, sub, func() error { return nil }, nil
	}
	if o.connName != "" {
		name = o.connName
	}
	cfg := transport.Config{TLS: o.tls, Heartbeat: o.heartbeat, Name: name}
	if pub, err = transport.Open(url, cfg, o.logger); err != nil {
		return nil, nil, nil, err
	}
	if sub, err = transport.Open(url, cfg, o.logger); err != nil {
		_ = pub.Close()
		return nil, nil, nil, err
	}
	return pub, sub, joinClose(pub.Close, sub.Close), nil
}

// NewServer connects to the broker at url (one URL, or a cluster's nodes
// separated by commas, as for Dial) and declares the namespace's
// exchanges and main request queue; it returns once they exist. rcvr holds
// the services; nil means rpc.DefaultServer, so that rpc.Register(new(Math))
// just works. Call Serve to start handling requests and Close to release
// the server's connections.
func NewServer(url, namespace string, rcvr *rpc.Server, opts ...Option) (*Server, error) {
	o, n, err := prepare(namespace, opts)
	if err != nil {
		return nil, err
	}
	if rcvr == nil {
		rcvr = rpc.DefaultServer
	}
	pubConn, subConn, closeConns, err := connections(url, o, "amqprpc server "+namespace)
	if err != nil {
		return nil, err
	}
	s := &Server{rcvr: rcvr, names: n, opts: o, pubConn: pubConn, subConn: subConn, closeConns: closeConns, active: make(map[*serverCodec]bool)}
	s.closing, s.stopClosing = context.WithCancel(context.Background())
	s.abandon = make(chan struct{})
	s.handlers, s.stopHandlers = context.WithCancel(context.Background())
	s.seen = newDedupe(o.dedupe, o.replyCache)
	s.queue = func() string { return n.requestQueue }
	s.setup = n.requestSide(subConn)
	if n.fanout { // a queue of its own, so that it gets every broadcast
		q := &fanoutQueue{names: n, expiry: o.replyExpiry, conn: subConn, log: o.logger, id: randomHex(8)}
		s.queue, s.setup = q.Name, q.setup
	}
	if err := s.declare(); err != nil {
		_ = s.closeConns()
		return nil, err
	}
	s.acker = transport.NewAcker()
	if s.pub, err = transport.NewPublisher(pubConn, o.logger, n.declareExchanges, ackBurst(s.acker, subConn)); err != nil {
		_ = s.closeConns()
		return nil, err
	}
	s.tel = newTelemetry(o, true)
	s.unobserve = s.tel.observe("server "+randomHex(8), s.pub.Len, reconnects(pubConn, subConn), nil)
	return s, nil
}
