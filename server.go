package amqprpc

import (
	"context"
	"errors"
	"log/slog"
	"net/rpc"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// Server serves the methods registered on a *rpc.Server to the callers of
// one namespace. Any number of server processes may serve one namespace:
// the broker shares the requests among them. Its methods are safe for
// concurrent use.
type Server struct {
	rcvr        *rpc.Server
	names       names
	opts        *options
	pubConn     *transport.Conn
	subConn     *transport.Conn
	closeConns  func() error // closes pubConn and subConn, unless they are shared (WithConnection)
	pub         *transport.Publisher
	acker       *transport.Acker // acks requests, gathered per burst of reply confirms
	seen        *dedupe          // calls answered recently, shared by all consumers
	tel         *telemetry
	unobserve   func() error              // unregisters the telemetry's observable metrics
	queue       func() string             // that Serve consumes
	ctxHandlers ctxServices               // Register's context-aware methods
	setup       func(*amqp.Channel) error // declares what Serve needs

	mu sync.Mutex
	// protects closed, serving and active
	closed  bool
	serving bool                  // Serve is running
	active  map[*serverCodec]bool // the codecs of running Serve and ReceiveFromQueue calls
	running sync.WaitGroup        // running Serve and ReceiveFromQueue calls

	closing      context.Context    // ends with Close
	stopClosing  context.CancelFunc // ends closing
	abandon      chan struct{}      // closed when Shutdown stops waiting
	abandonOnce  sync.Once
	handlers     context.Context    // parent of context-aware handlers' contexts
	stopHandlers context.CancelFunc // cancels them: Shutdown stopped waiting
	closeOnce    sync.Once
	closeErr     error
}

func (s *Server) declare() error {
	return onChannel(context.Background(), s.subConn, s.setup)
}

// Serve handles requests until ctx is done or Close is called, then stops
// taking requests, waits until the handlers already running have replied
// (and their requests are acked), lets requests not yet started go back to
// the queue, and returns nil. It blocks all that time. Up to the prefetch
// (WithPrefetch) handlers run at once, on goroutines that later calls
// reuse: a handler that locks its OS thread (runtime.LockOSThread) or sets
// goroutine labels must undo that before it returns. A lost connection
// does not end it: it consumes again once the connection is back, and
// while the request queue cannot be reached (a classic queue whose node is
// down) it waits for it, logging a warning every 30 s. It returns an error
// when it cannot start consuming, ErrServing while another Serve runs, and
// ErrClosed after Close. Serve may be called again after it returned.
func (s *Server) Serve(ctx context.Context) error {
	c, err := s.start(ctx, transport.ConsumerConfig{QueueName: s.queue, Prefetch: s.opts.prefetch, Setup: s.setup, WaitForQueue: true}, 0, true)
	if err != nil {
		return err
	}
	s.serve(ctx, c, true)
	if c.lost != nil && ctx.Err() == nil {
		return c.lost
	}
	return nil
}

// start begins consuming for Serve (main) or ReceiveFromQueue and returns
// the codec that reads the deliveries, registered with the server so that
// Close stops it. Waiting for the connection ends with ctx or Close.
func (s *Server) start(ctx context.Context, cfg transport.ConsumerConfig, limit int, main bool) (*serverCodec, error) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, ErrClosed
	case main && s.serving:
		s.mu.Unlock()
		return nil, ErrServing
	}
	s.serving = s.serving || main
	s.running.Add(1)
	s.mu.Unlock()

	c := newServerCodec(serverCodecConfig{names: s.names, opts: s.opts, pub: s.pub, acker: s.acker, seen: s.seen, tel: s.tel, limit: limit, abandon: s.abandon})
	if limit > 0 {
		cfg.Remaining = c.remaining
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.closing, cancel)()
	k, err := s.subConn.Consume(ctx, cfg)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if main {
			s.serving = false
		}
		s.running.Done()
		if s.closed {
			return nil, ErrClosed
		}
		return nil, err
	}
	c.attach(k)
	s.active[c] = true
	if s.closed { // Close ran while we waited: stop at once
		c.stop()
	}
	return c, nil
}

// ReceiveFromQueue handles calls from the request queue made by
// Client.CreateRequestQueue(ctx, queue) until maxCalls well-formed calls
// were handled (maxCalls <= 0: no limit) or ctx ends, and returns how many
// it handled; if ctx ends first the error is ctx.Err(), and after Close it
// is ErrClosed. It blocks until then, and returns once the calls it took
// have replied and been acked.
//
// If the queue does not exist yet, it waits silently until it is created.
// It never takes more calls than it may handle (its prefetch is maxCalls):
// the others stay in the queue for the next receiver. Any number of
// receives may run at once, with or without Serve, and each resumes
// consuming after a reconnection. Malformed requests are refused and not
// counted.
func (s *Server) ReceiveFromQueue(ctx context.Context, queue string, maxCalls int) (int, error) {
	name, err := s.names.extraQueue(queue)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	prefetch := min(maxCalls, 65535)
	if maxCalls <= 0 {
		prefetch = s.opts.prefetch
	}
	c, err := s.start(ctx, transport.ConsumerConfig{Queue: name, Prefetch: prefetch, WaitForQueue: true}, maxCalls, false)
	if err != nil {
		return 0, err
	}
	s.serve(ctx, c, false)
	n := int(c.count.Load())
	switch {
	case maxCalls > 0 && n >= maxCalls:
		return n, nil
	case ctx.Err() != nil:
		return n, ctx.Err()
	case c.lost != nil:
		return n, c.lost
	}
	return n, ErrClosed
}

// Close stops running Serve and ReceiveFromQueue calls as ctx cancellation
// would, waits for them to return, and closes the server's connections. It
// blocks until the handlers already running have replied, with no limit
// (see Shutdown for one). It is idempotent and safe for concurrent use;
// later calls return nil.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.stopClosing() // interrupts a start waiting for the connection
		for c := range s.active {
			c.stop()
		}
		s.mu.Unlock()
		s.running.Wait()
		if s.names.fanout {
			s.deleteQueue() // no broadcast should wait for a server that is gone
		}
		s.pub.Stop()
		s.closeErr = errors.Join(s.unobserve(), s.closeConns(), s.pub.Close())
	})
	return s.closeErr
}

// Shutdown closes the server as Close does, but waits for the handlers
// already running, and for the broker's confirms of their replies, only
// until ctx ends, as http.Server.Shutdown does. Then it closes the
// connections at once (unless they are shared: WithConnection) and
// returns ctx.Err(): the requests not answered
// go back to the queue, for another server (they may run twice), and
// handlers still running are left to finish on their own, their replies
// dropped (context-aware handlers see their context cancelled). Serve and
// ReceiveFromQueue return by then. Otherwise it returns Close's result.
// Close after Shutdown returns nil.
func (s *Server) Shutdown(ctx context.Context) error {
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		return err
	case <-ctx.Done():
	}
	s.abandonOnce.Do(func() { close(s.abandon) })
	s.stopHandlers() // context-aware handlers still running are told
	// Close may be blocked on the broker (a channel close, an ack write,
	// a queue delete on a link gone silent): closing the connections
	// ends those at once. Shared ones (WithConnection) are not ours to
	// close.
	s.pub.Stop()
	_ = s.closeConns()
	<-closed
	return ctx.Err()
}

// ackBurst returns the publisher's burst hook: the acks that a burst of
// reply confirms triggers are gathered into multiple acks, and their frames
// into one write on the consuming connection.
func ackBurst(a *transport.Acker, conn *transport.Conn) func() (end func()) {
	return func() (end func()) {
		uncork := conn.Cork()
		flush := a.Burst()
		return func() {
			flush()
			uncork()
		}
	}
}

// deleteQueue deletes the fanout server's own queue, if the connection is
// up; otherwise the broker deletes it after its expiry.
func (s *Server) deleteQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = onChannel(ctx, s.subConn, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(s.queue(), false, false, false)
		return err
	})
}

// fanoutQueue is a fanout server's own queue, rpc_<ns>_fanout_<id>, which
// gets a copy of every broadcast. It is a classic queue on the node the
// server was connected to when it declared it; when that node is down the
// server declares a queue with a new id on the node it is connected to
// now, so that it gets broadcasts again at once rather than when the node
// is back. The old queue, once its node is back, is deleted by the broker
// after WithReplyQueueExpiry without a consumer.
type fanoutQueue struct {
	names  names
	expiry time.Duration
	conn   *transport.Conn
	log    *slog.Logger

	mu sync.Mutex
	id string // protected by mu
}

// Name is the queue's name now.
func (q *fanoutQueue) Name() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.names.fanoutQueue(q.id)
}

// setup is the consumer's Setup: the exchanges, then the queue, which
// moves to a new id when its node is down.
func (q *fanoutQueue) setup(ch *amqp.Channel) error {
	if err := q.names.requestSide(q.conn)(ch); err != nil {
		return err
	}
	q.mu.Lock()
	id := q.id
	q.mu.Unlock()
	err := q.names.declareFanoutQueue(ch, id, q.expiry)
	if transport.QueueDown(err) {
		q.mu.Lock()
		q.id = randomHex(8)
		q.mu.Unlock()
		q.log.Warn("amqprpc: the fanout server's queue is on a node that is down; declaring a new one",
			"queue", q.names.fanoutQueue(id), "new_queue", q.Name())
	}
	return err
}

// NewServerCodec returns a net/rpc server codec that reads the namespace's
// main request queue on conn, for use with rpc.ServeCodec. It declares the
// namespace's topology first. ServeCodec runs until conn closes; Server is
// the way to stop gracefully and to survive a lost connection.
//
// It follows net/rpc's codec contract: reads come in header/body pairs from
// one goroutine, a body read into nil is discarded, and writes are
// serialised by net/rpc. Malformed requests are refused inside the codec.
func NewServerCodec(conn *amqp.Connection, namespace string, opts ...Option) (rpc.ServerCodec, error) {
	o, n, err := prepare(namespace, opts)
	if err != nil {
		return nil, err
	}
	tc := transport.Wrap(conn, o.logger)
	k, err := tc.Consume(context.Background(), transport.ConsumerConfig{Queue: n.requestQueue, Prefetch: o.prefetch, Setup: n.requestSide(tc)})
	if err != nil {
		_ = tc.Close()
		return nil, err
	}
	acker := transport.NewAcker()
	pub, err := transport.NewPublisher(tc, o.logger, n.declareExchanges, ackBurst(acker, tc))
	if err != nil {
		_ = k.Close()
		_ = tc.Close()
		return nil, err
	}
	c := newServerCodec(serverCodecConfig{names: n, opts: o, pub: pub, acker: acker, seen: newDedupe(o.dedupe, o.replyCache)})
	c.attach(k)
	c.release = joinClose(k.Close, stopPublisher(pub), tc.Close, pub.Close)
	return c, nil
}

// onChannel runs f on a channel of its own on conn, opened within ctx, and
// closes it: for declarations, look-ups and deletions, whose failure (a
// passive declare of a missing queue, say) closes the channel.
func onChannel(ctx context.Context, conn *transport.Conn, f func(*amqp.Channel) error) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	return errors.Join(f(ch), closeChannel(ch))
}

// closeChannel closes ch; a channel already closed (with its connection) is
// not an error.
func closeChannel(ch *amqp.Channel) error {
	if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return err
	}
	return nil
}
