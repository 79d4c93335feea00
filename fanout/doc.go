// Package fanout broadcasts net/rpc calls: every server of a fanout
// namespace runs each call once, and the caller can gather every reply.
//
// # Overview
//
// It is amphora's AmqpRpcFanoutServer and AmqpRpcFanoutClient, fixed: each
// server consumes a queue of its own bound to the namespace's fanout request
// exchange, so a broadcast really reaches all of them (amphora's fanout
// servers shared one queue), and [Client.CallAll] returns all the replies
// (amphora kept only the first).
//
//	server, err := fanout.NewServer(url, "cache", nil) // nil: rpc.DefaultServer
//	go server.Serve(ctx)
//
//	client, err := fanout.Dial(url, "cache")
//	results, err := client.CallAll(ctx, "Cache.Invalidate", "user:42",
//		func() any { return new(int) }, 3)
//
// [Client.Call], [Client.Go] and [Client.CallContext] return the first
// reply, as amphora's fanout client did; later ones are dropped. A fanout
// client has no request queues of its own to create or routing to tune: a
// broadcast reaches every server's queue.
//
// # Topology
//
// For namespace S, the request exchange rpc_S_request is of type fanout (a
// direct namespace of the same name is refused with
// amqprpc.ErrNamespaceConflict). Each server owns rpc_S_fanout_<random id>:
// durable, so that broadcasts wait in it through a reconnection; deleted when
// the server closes, and by the broker after amqprpc.WithReplyQueueExpiry
// (default 5 minutes) if the server dies. Replies go through rpc_S_response
// to the caller's reply queue, as in package amqprpc.
//
// # Ignoring requests
//
// A handler that returns [amqprpc.ErrIgnoreRequest] sends no reply: the
// request is acked, and CallAll simply gets one reply fewer.
package fanout
