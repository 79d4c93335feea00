package amqprpc

import (
	"errors"
	"net/rpc"
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
	// ErrNamespaceConflict means a namespace is already used with the other
	// kind of request exchange: a direct (Dial, NewServer) and a fanout
	// (package fanout) service cannot share a namespace.
	ErrNamespaceConflict = errors.New("amqprpc: namespace conflict")
	// ErrIgnoreRequest is returned by a handler that does not want to answer
	// a request (return it as is: net/rpc passes only its text). A fanout
	// server then sends no reply and acks the request. A direct server puts
	// the request back for another server to take, a little later each time;
	// after ten tries the caller gets an error saying that no server took
	// it. If the queue is gone when the request is put back, the caller
	// gets an error matching ErrNoRoute at once. What is put back is the
	// request as received: a []byte argument shares its memory, so change
	// it in place only if you answer.
	ErrIgnoreRequest = errors.New("amqprpc: request ignored")
	// ErrRefused means the broker refused to take a request (a negative
	// publisher confirm); the call was not run.
	ErrRefused = errors.New("amqprpc: broker refused the request")
)

// ErrShutdown is rpc.ErrShutdown, returned by calls on a closed client.
var ErrShutdown = rpc.ErrShutdown

// Texts of the errors the client itself puts in calls that net/rpc completes
// with an [rpc.ServerError]: Go calls that time out, that were canceled, or
// whose request the broker kept closing the channel over (too large for
// it, say: it may or may not have run).
const (
	timeoutText   = "amqprpc: call timed out"
	canceledText  = "amqprpc: call canceled"
	abandonedText = "amqprpc: request given up: the broker closed the channel on it again and again (too large?)"
)

// errConsumerEnded is Serve's error when the broker or the network ended the
// request consumer.
var errConsumerEnded = errors.New("amqprpc: request consumer ended: connection or channel closed")
