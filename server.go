package amqprpc

import (
	"context"
	"errors"
	"net/rpc"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// Server serves the methods registered on a *rpc.Server to the callers of
// one namespace. Any number of server processes may serve one namespace:
// the broker shares the requests among them. Its methods are safe for
// concurrent use.
type Server struct {
	rcvr    *rpc.Server
	names   names
	opts    *options
	pubConn *transport.Conn
	subConn *transport.Conn
	pub     *transport.Publisher

	mu sync.Mutex
	// protects closed and serving
	closed  bool
	serving *serverCodec  // nil when Serve is not running
	served  chan struct{} // closed when the running Serve returns

	closeOnce sync.Once
	closeErr  error
}

// NewServer connects to the broker at url and declares the namespace's
// exchanges and main request queue; it returns once they exist. rcvr holds
// the services; nil means rpc.DefaultServer, so that rpc.Register(new(Math))
// just works. Call Serve to start handling requests and Close to release
// the server's connections.
func NewServer(url, namespace string, rcvr *rpc.Server, opts ...Option) (*Server, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	n, err := newNames(namespace)
	if err != nil {
		return nil, err
	}
	if rcvr == nil {
		rcvr = rpc.DefaultServer
	}
	name := o.connName
	if name == "" {
		name = "amqprpc server " + namespace
	}
	cfg := transport.Config{TLS: o.tls, Heartbeat: o.heartbeat, Name: name}
	pubConn, err := transport.Open(url, cfg, o.logger)
	if err != nil {
		return nil, err
	}
	subConn, err := transport.Open(url, cfg, o.logger)
	if err != nil {
		_ = pubConn.Close()
		return nil, err
	}
	s := &Server{rcvr: rcvr, names: n, opts: o, pubConn: pubConn, subConn: subConn}
	if err := s.declare(); err != nil {
		_ = s.closeConns()
		return nil, err
	}
	if s.pub, err = transport.NewPublisher(pubConn, o.logger, n.declareExchanges); err != nil {
		_ = s.closeConns()
		return nil, err
	}
	return s, nil
}

func (s *Server) declare() error {
	ch, err := s.subConn.Channel(context.Background())
	if err != nil {
		return err
	}
	return errors.Join(s.names.declareRequestSide(ch), closeChannel(ch))
}

// Serve handles requests until ctx is done or Close is called, then stops
// taking requests, waits until the handlers already running have replied
// (and their requests are acked), lets requests not yet started go back to
// the queue, and returns nil. It blocks all that time. Up to the prefetch
// (WithPrefetch) handlers run at once. A lost connection does not end it:
// it consumes again once the connection is back. It returns an error when
// it cannot start consuming, ErrServing while another Serve runs, and
// ErrClosed after Close. Serve may be called again after it returned.
func (s *Server) Serve(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.serving != nil:
		s.mu.Unlock()
		return ErrServing
	}
	c, err := s.consume(s.names.requestQueue, s.opts.prefetch, s.names.declareRequestSide)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.serving, s.served = c, make(chan struct{})
	s.mu.Unlock()

	stop := context.AfterFunc(ctx, c.stop)
	s.rcvr.ServeCodec(c) // returns after c.Close
	stop()

	s.mu.Lock()
	s.serving = nil
	close(s.served)
	s.mu.Unlock()
	if c.lost != nil && ctx.Err() == nil {
		return c.lost
	}
	return nil
}

// consume starts consuming queue on the server's consuming connection and
// returns the codec that reads it.
func (s *Server) consume(queue string, prefetch int, setup func(*amqp.Channel) error) (*serverCodec, error) {
	k, err := s.subConn.Consume(transport.ConsumerConfig{Queue: queue, Prefetch: prefetch, Setup: setup})
	if err != nil {
		return nil, err
	}
	return newServerCodec(serverCodecConfig{
		names:      s.names,
		opts:       s.opts,
		pub:        s.pub,
		deliveries: k.Deliveries(),
		release:    k.Close,
	}), nil
}

// Close stops a running Serve as ctx cancellation would, waits for it to
// return, and closes the server's connections. It is idempotent and safe
// for concurrent use; later calls return nil.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		c, served := s.serving, s.served
		s.mu.Unlock()
		if c != nil {
			c.stop()
			<-served
		}
		s.closeErr = errors.Join(s.pub.Close(), s.closeConns())
	})
	return s.closeErr
}

func (s *Server) closeConns() error {
	return errors.Join(s.pubConn.Close(), s.subConn.Close())
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
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	n, err := newNames(namespace)
	if err != nil {
		return nil, err
	}
	tc := transport.Wrap(conn, o.logger)
	k, err := tc.Consume(transport.ConsumerConfig{Queue: n.requestQueue, Prefetch: o.prefetch, Setup: n.declareRequestSide})
	if err != nil {
		_ = tc.Close()
		return nil, err
	}
	pub, err := transport.NewPublisher(tc, o.logger, n.declareExchanges)
	if err != nil {
		_ = k.Close()
		_ = tc.Close()
		return nil, err
	}
	return newServerCodec(serverCodecConfig{
		names:      n,
		opts:       o,
		pub:        pub,
		deliveries: k.Deliveries(),
		release:    joinClose(k.Close, pub.Close, tc.Close),
	}), nil
}

// closeChannel closes ch; a channel already closed (with its connection) is
// not an error.
func closeChannel(ch *amqp.Channel) error {
	if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return err
	}
	return nil
}
