package amqprpc

import (
	"context"
	"errors"
	"fmt"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// Errors of this package. Compare with errors.Is. Calls on a closed client
// fail with [rpc.ErrShutdown], and calls whose context ends with ctx.Err(),
// as in the standard library.
var (
	// ErrClosed is returned by Serve and ReceiveFromQueue on a server that
	// was closed.
	ErrClosed = errors.New("amqprpc: server closed")
	// ErrServing is returned by Serve while another Serve runs on the same server.
	ErrServing = errors.New("amqprpc: server already serving")
	// ErrNoRoute means no queue was bound for a call's routing key (see To
	// and Client.Tune): the broker dropped the request, and the call failed
	// at once. The error's text names the key (for a broadcast with no
	// server at all, the fanout exchange). A request that servers ignored
	// (ErrIgnoreRequest) and whose queue then went away ends with it too:
	// its handler may have run before it was ignored.
	ErrNoRoute = errors.New("amqprpc: no queue bound for the routing key")
	// ErrQueueUnavailable means a call's request queue exists but could
	// not be reached until the call's deadline or context ended it: a
	// classic queue whose node is down (a classic queue lives on one node
	// of a cluster; see WithQueueType for quorum queues). The broker
	// returns such a request as if no queue were bound; the client asks
	// about the queue and, when it is unavailable, publishes the call again,
	// a little later each time (up to every 2 s), instead of failing it
	// with ErrNoRoute. The error also matches the context error that ended
	// the call (context.DeadlineExceeded, context.Canceled). The call did
	// not run.
	ErrQueueUnavailable = errors.New("amqprpc: request queue unavailable")
	// ErrNamespaceConflict means a namespace is already used with the other
	// kind of request exchange: a direct (Dial, NewServer) and a fanout
	// (package fanout) service cannot share a namespace.
	ErrNamespaceConflict = errors.New("amqprpc: namespace conflict")
	// ErrIgnoreRequest is returned by a handler that does not want to answer
	// a request (return it as is: net/rpc passes only its text). A fanout
	// server then sends no reply and acks the request. A direct server puts
	// the request back for another server to take, a little later each time;
	// after ten tries the caller gets an error matching ErrNotTaken. If the queue is gone when the request is put back, the caller
	// gets an error matching ErrNoRoute at once. What is put back is the
	// request as received: a []byte argument shares its memory, so change
	// it in place only if you answer.
	ErrIgnoreRequest = errors.New("amqprpc: request ignored")
	// ErrNotTaken means that every server that took a direct request
	// ignored it (ErrIgnoreRequest), ten times in all: no server wanted
	// the call, and none ran it to the end. The error's text says how many
	// times.
	ErrNotTaken = errors.New("amqprpc: no server took the request")
	// ErrRefused means the broker refused to take a request: negative
	// publisher confirms (a queue full with overflow reject-publish, a
	// quorum queue without a leader) until the call's deadline or context
	// ended it, the request published again meanwhile (the error then also
	// matches ErrQueueUnavailable and the context's error), in which case
	// the call was not run; or a channel the broker closed
	// again and again while the request was in flight alone (larger than
	// its max_message_size, say), in which case it may have run.
	ErrRefused = errors.New("amqprpc: broker refused the request")
	// ErrTooLong means a name or property does not fit AMQP: a method
	// name, routing key, queue name, client id or header key over 255
	// bytes (AMQP 0-9-1 §4.2.5.3 short strings), or a time to live over
	// RabbitMQ's 2^32-1 ms; or a request's properties and headers (trace
	// context, baggage) over 60 KiB, or over one frame of the broker's
	// frame_max when it is configured smaller (AMQP 0-9-1 §4.2.3: they
	// travel in one content header frame). Nothing was sent: amqp091-go
	// would close the connection, or the broker would, and every call
	// sharing it with them, over such a frame.
	ErrTooLong = transport.ErrTooLong
	// ErrTooLarge means a body is larger than the limit set with
	// WithMaxBodySize: a client's request (not sent), or a reply the
	// client received (not decoded). A server answers a request over its
	// limit with an error reply, and replaces a reply over it with one.
	ErrTooLarge = errors.New("amqprpc: body exceeds the size limit")
	// ErrBadReply means a reply arrived but could not be read: an unknown
	// content type, a body that does not decode, or one of the wrong shape
	// for the reply value (see codec.ErrShape). The call may have run.
	ErrBadReply = errors.New("amqprpc: unreadable reply")
)

// Local failures: the client itself ends these calls, with these errors
// as they are (see callInfo), never as an rpc.ServerError.
var (
	errTimedOut  = fmt.Errorf("amqprpc: call timed out: %w", context.DeadlineExceeded)
	errCanceled  = fmt.Errorf("amqprpc: call canceled: %w", context.Canceled)
	errAbandoned = fmt.Errorf("%w: request given up: the broker closed the channel on it again and again (too large?)", ErrRefused)
	// errOverFrameMax: the broker's frame_max is under 64 KiB, and the
	// request's properties (trace context, baggage) do not fit one frame.
	errOverFrameMax = fmt.Errorf("%w: %s", ErrTooLong, notSent("the request", transport.TooLarge))
)

// notSent says why what (a message, named for the error text) did not
// reach the broker, by the outcome of its publishing: the broker refused
// it (nacked, or closed the channel on it until the publisher gave up), or
// the publisher kept it back because its properties cannot fit one frame
// (TooLarge).
func notSent(what string, o transport.Outcome) string {
	if o == transport.TooLarge {
		return what + " does not fit one frame of the broker's frame_max (properties and headers); not sent"
	}
	return "the broker refused " + what + " (" + o.String() + ")"
}

// errConsumerEnded is Serve's and ReceiveFromQueue's error when the
// consumer ended for good, which happens only on a connection of the
// user's own (NewServerCodec, or a shared connection closed under the
// server): a Server's own connections reconnect. It is not exported: there
// is nothing to do about it but to look at the connection.
var errConsumerEnded = errors.New("amqprpc: request consumer ended: connection or channel closed")
