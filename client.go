package amqprpc

import (
	"context"
	"errors"
	"log"
	"net/rpc"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// Client calls the net/rpc services of one namespace through RabbitMQ. Call
// and Go behave as in net/rpc (*rpc.Client's methods of the same
// signatures); CallContext adds a context. A Client is safe for concurrent
// use by many goroutines.
type Client struct {
	rc    *rpc.Client // over codec
	codec *clientCodec
	conn  *transport.Conn // consuming; also for queue management
	// closing is held for reading by start, from its closed check until the
	// call's args are back in call.Args, and for writing by Close: net/rpc
	// never fails a call for Close while start still writes it.
	closing   sync.RWMutex
	closeOnce sync.Once
	closeErr  error
}

// NewClientCodec returns a net/rpc client codec for namespace on conn, for
// use with rpc.NewClientWithCodec. It declares the same topology as Dial and
// consumes the client's reply queue on conn. Closing the codec (through
// rpc.Client.Close) closes its channels, not conn. It does not reconnect:
// once conn is lost the rpc.Client shuts down.
//
// It follows net/rpc's codec contract: net/rpc serialises WriteRequest
// calls and reads header/body pairs from one goroutine; a body read into
// nil is discarded; after Close reads return io.EOF, so pending calls fail
// with rpc.ErrShutdown. Calls get the default call timeout (WithCallTimeout).
// Prefer Dial: with a plain rpc.Client a reply body that does not decode
// into the reply value shuts the client down, as with any net/rpc codec.
func NewClientCodec(conn *amqp.Connection, namespace string, opts ...Option) (rpc.ClientCodec, error) {
	o, n, err := prepare(namespace, opts)
	if err != nil {
		return nil, err
	}
	id := o.id()
	tc := transport.Wrap(conn, o.logger)
	cc, err := newClientCodecOn(tc, tc, n, id, o, tc.Close)
	if err != nil {
		_ = tc.Close()
		return nil, err
	}
	return cc, nil
}

// newClientCodecOn declares the client's topology and consumes its reply
// queue on subConn, and publishes on pubConn; it redoes both after every
// reconnection. The codec's Close ends with closeConns.
func newClientCodecOn(pubConn, subConn *transport.Conn, n names, id string, o *options, closeConns func() error) (*clientCodec, error) {
	queue, err := newReplyQueue(n, id, o, subConn)
	if err != nil {
		return nil, err
	}
	replies, err := subConn.Consume(context.Background(), transport.ConsumerConfig{
		QueueName: queue.Name,
		Prefetch:  replyPrefetch,
		Setup:     queue.setup,
		Cancelled: func() { queue.lost.Store(true) },
	})
	if err != nil {
		_ = queue.close()
		return nil, err
	}
	pub, err := transport.NewPublisher(pubConn, o.logger, n.declareExchanges, nil)
	if err != nil {
		_ = replies.Close()
		_ = queue.close()
		return nil, err
	}
	cc := newClientCodec(clientCodecConfig{
		names:    n,
		clientID: id,
		opts:     o,
		pub:      pub,
		stream:   replies.Stream(),
		lost:     &queue.lost,
		lookUps:  newQueueLookups(subConn, o.logger),
		release:  joinClose(replies.Close, stopPublisher(pub), closeConns, queue.close, pub.Close),
	})
	unobserve := cc.tel.observe(id, pub.Len, reconnects(pubConn, subConn), cc.dropped.Load)
	cc.release = joinClose(unobserve, cc.release) // before anyone can Close cc
	return cc, nil
}

// reconnects returns a func that counts the reconnections of pub and sub
// (one connection counted once), for the metrics.
func reconnects(pub, sub *transport.Conn) func() uint64 {
	if pub == sub {
		return pub.Reconnects
	}
	return func() uint64 { return pub.Reconnects() + sub.Reconnects() }
}

// replyPrefetch bounds the replies in flight to one client: enough that the
// broker never waits for the client's acks.
const replyPrefetch = 1024

// stopPublisher returns a func for joinClose that stops pub without waiting:
// the connection must close before waiting for a publisher that a blocked
// broker may have stuck in a write.
func stopPublisher(pub *transport.Publisher) func() error {
	return func() error { pub.Stop(); return nil }
}

// joinClose returns a func that calls each of fns in order and joins their
// errors.
func joinClose(fns ...func() error) func() error {
	return func() error {
		var errs []error
		for _, f := range fns {
			errs = append(errs, f())
		}
		return errors.Join(errs...)
	}
}

// ID returns the client id: the routing key of its replies.
func (c *Client) ID() string { return c.codec.replyTo }

// Call invokes serviceMethod, waits for it to complete and returns its error
// status, as rpc.Client.Call does. It fails with an error matching
// context.DeadlineExceeded when no reply arrives within the default call
// timeout (WithCallTimeout).
func (c *Client) Call(serviceMethod string, args, reply any) error {
	return c.CallContext(context.Background(), serviceMethod, args, reply)
}

// Go invokes serviceMethod asynchronously, as rpc.Client.Go does: the
// returned Call's Done channel receives it once complete. A nil done gets a
// new channel; a non-nil one must be buffered (net/rpc panics otherwise).
// The completed Call's Error is as CallContext's error would be, except
// that no context can end it: an rpc.ServerError from the server, or a
// failure of the client's own (context.DeadlineExceeded after the default
// call timeout, ErrNoRoute, ErrQueueUnavailable, ErrRefused, ErrBadReply, ...).
func (c *Client) Go(serviceMethod string, args, reply any, done chan *rpc.Call) *rpc.Call {
	call, _ := c.start(context.Background(), serviceMethod, args, reply, time.Time{}, done)
	return call
}

// start sends a call through rpc.Client.Go, its args in an envelope that
// tells the codec where the reply goes and the caller's deadline (zero:
// the default call timeout).
func (c *Client) start(ctx context.Context, serviceMethod string, args, reply any, deadline time.Time, done chan *rpc.Call) (*rpc.Call, *callInfo) {
	info := &callInfo{ctx: ctx, args: args, reply: reply, deadline: deadline}
	c.closing.RLock()
	defer c.closing.RUnlock()
	if c.codec.isClosed() {
		// net/rpc would fail it before Go returns, with the envelope in
		// call.Args for whoever reads done meanwhile: fail it as net/rpc
		// does, but with the caller's args.
		return shutDown(serviceMethod, args, reply, done), info
	}
	call := c.rc.Go(serviceMethod, &callArgs{args: args, info: info}, reply, done)
	if info.sent {
		c.codec.attach(info, call) // puts back call.Args
	} else {
		call.Args = args // Close won the race with the check above: net/rpc failed it
	}
	return call, info
}

// shutDown returns a call completed with rpc.ErrShutdown, as rpc.Client.Go
// makes one on a closed client (the same done rules and panic).
func shutDown(serviceMethod string, args, reply any, done chan *rpc.Call) *rpc.Call {
	if done == nil {
		done = make(chan *rpc.Call, 10) // net/rpc's default
	} else if cap(done) == 0 {
		log.Panic("rpc: done channel is unbuffered")
	}
	call := &rpc.Call{ServiceMethod: serviceMethod, Args: args, Reply: reply, Error: rpc.ErrShutdown, Done: done}
	select {
	case done <- call:
	default:
	}
	return call
}

// CallContext invokes serviceMethod and waits for its reply or for ctx to
// end, whichever comes first. When ctx ends first it returns ctx.Err() at
// once (for a call held for an unavailable queue, an error matching both
// ctx.Err() and ErrQueueUnavailable), frees the call, and any late reply
// is dropped; the request carries ctx's deadline as its AMQP expiration,
// so it expires in the broker rather than run late. Without a deadline in
// ctx the default call timeout applies.
//
// Errors the server sent (a handler's error, an unknown method, args it
// could not read) are rpc.ServerError values. Failures of the client's own
// are error values that match, with errors.Is: context.DeadlineExceeded
// (no reply in time), ErrNoRoute, ErrQueueUnavailable, ErrRefused,
// ErrTooLong, ErrTooLarge,
// ErrBadReply (with codec.ErrShape or codec.ErrMalformed), or
// rpc.ErrShutdown once the client is closed. A handler cannot pass off its
// error as one of them.
func (c *Client) CallContext(ctx context.Context, serviceMethod string, args, reply any) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	deadline, _ := ctx.Deadline()
	call, info := c.start(ctx, serviceMethod, args, reply, deadline, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
	case <-ctx.Done():
		if info.sent {
			if err, ok := c.codec.cancel(info.seq, ctx.Err()); ok {
				return err
			}
		}
		// The reply is being read into reply right now (or the call never
		// went out): wait the moment it takes, so reply is not written to
		// after we return.
		<-call.Done
	}
	return call.Error // a local failure is an error value (see callInfo)
}

// Dropped returns how many replies the client dropped because they matched
// no pending call: duplicates, replies after a timeout, forged ids.
func (c *Client) Dropped() uint64 { return c.codec.dropped.Load() }

// Close fails pending calls with rpc.ErrShutdown, stops the client's
// goroutines and closes its connections. The reply queue stays until its
// expiry (WithReplyQueueExpiry). Close is idempotent and safe for concurrent
// use; later calls return nil.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Lock() // no start is between its check and attach
		defer c.closing.Unlock()
		err := c.rc.Close() // closes the codec, which closes the connections
		if errors.Is(err, rpc.ErrShutdown) {
			err = nil
		}
		c.closeErr = err
	})
	return c.closeErr
}
