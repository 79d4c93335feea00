package fanout

import (
	"context"
	"net/rpc"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/internal/link"
)

// Server runs every broadcast of a fanout namespace once. Its methods are
// those of amqprpc.Server and are safe for concurrent use.
type Server struct {
	s *amqprpc.Server
}

// NewServer connects to the broker at url (one URL, or a cluster's nodes
// separated by commas, as for amqprpc.Dial), declares the namespace's fanout
// exchange and the server's own queue, and returns once they exist:
// broadcasts sent from then on reach this server. rcvr holds the services;
// nil means rpc.DefaultServer. Options are those of package amqprpc.
func NewServer(url, namespace string, rcvr *rpc.Server, opts ...amqprpc.Option) (*Server, error) {
	s, err := amqprpc.NewServer(url, namespace, rcvr, withFanout(opts)...)
	if err != nil {
		return nil, err
	}
	return &Server{s: s}, nil
}

// Serve handles broadcasts until ctx is done or Close is called, as
// amqprpc.Server.Serve does, and returns nil then. It blocks all that time
// and survives lost connections.
func (s *Server) Serve(ctx context.Context) error { return s.s.Serve(ctx) }

// Close stops Serve once running handlers have replied, deletes the
// server's queue and closes its connections. It is idempotent.
func (s *Server) Close() error { return s.s.Close() }

// Shutdown closes the server as Close does, but waits for running handlers
// only until ctx ends, as amqprpc.Server.Shutdown does, and then returns
// ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error { return s.s.Shutdown(ctx) }

// Register publishes rcvr's methods, net/rpc's and the context-aware ones
// (func (t *T) M(ctx context.Context, args A, reply *R) error), as
// amqprpc.Server.Register does.
func (s *Server) Register(rcvr any) error { return s.s.Register(rcvr) }

// RegisterName is Register with the service name given, as
// amqprpc.Server.RegisterName.
func (s *Server) RegisterName(name string, rcvr any) error { return s.s.RegisterName(name, rcvr) }

// Client broadcasts calls to a fanout namespace. It is safe for concurrent
// use.
type Client struct {
	c *amqprpc.Client
}

// Dial connects to the broker at url (one URL, or a cluster's nodes
// separated by commas, as for amqprpc.Dial) and declares the namespace's fanout
// exchange and the client's reply queue. Options are those of package
// amqprpc.
func Dial(url, namespace string, opts ...amqprpc.Option) (*Client, error) {
	c, err := amqprpc.Dial(url, namespace, withFanout(opts)...)
	if err != nil {
		return nil, err
	}
	return &Client{c: c}, nil
}

// Call broadcasts serviceMethod and returns when the first reply arrives,
// as amqprpc.Client.Call does (later replies are dropped): amphora's
// fanout client call. Use CallAll for every reply.
func (c *Client) Call(serviceMethod string, args, reply any) error {
	return c.c.Call(serviceMethod, args, reply)
}

// Go broadcasts serviceMethod asynchronously, as amqprpc.Client.Go does;
// the first reply completes the call.
func (c *Client) Go(serviceMethod string, args, reply any, done chan *rpc.Call) *rpc.Call {
	return c.c.Go(serviceMethod, args, reply, done)
}

// CallContext broadcasts serviceMethod and waits for the first reply or
// for ctx to end, as amqprpc.Client.CallContext does.
func (c *Client) CallContext(ctx context.Context, serviceMethod string, args, reply any) error {
	return c.c.CallContext(ctx, serviceMethod, args, reply)
}

// Dropped returns how many replies the client dropped, as
// amqprpc.Client.Dropped does: for a broadcast made with Call, Go or
// CallContext, every reply after the first.
func (c *Client) Dropped() uint64 { return c.c.Dropped() }

// Close fails pending calls with rpc.ErrShutdown and closes the client's
// connections, as amqprpc.Client.Close does. It is idempotent.
func (c *Client) Close() error { return c.c.Close() }

// Result is one server's answer to a broadcast.
type Result struct {
	Reply any   // what newReply returned, filled in
	Err   error // that server's error (an rpc.ServerError), if it returned one
}

// CallAll sends one broadcast of serviceMethod with args and gathers the
// replies, each decoded into a new value from newReply (for example
// func() any { return new(int) }), until want replies arrived (want <= 0:
// until ctx ends) or ctx ends. It blocks until then and returns what it
// gathered, in arrival order; the error is ctx.Err() only when nothing
// arrived. Without deadline in ctx the client's default call timeout
// (amqprpc.WithCallTimeout) bounds the wait. With no server at all it fails
// at once with an error matching amqprpc.ErrNoRoute. Servers that ignore
// the request (amqprpc.ErrIgnoreRequest) send nothing.
func (c *Client) CallAll(ctx context.Context, serviceMethod string, args any, newReply func() any, want int) ([]Result, error) {
	got, err := link.CallAll(ctx, c.c, serviceMethod, args, newReply, want)
	if err != nil {
		return nil, err
	}
	results := make([]Result, len(got))
	for i, r := range got {
		results[i] = Result(r)
	}
	return results, nil
}

// withFanout appends the option that selects the fanout topology.
func withFanout(opts []amqprpc.Option) []amqprpc.Option {
	return append(append([]amqprpc.Option(nil), opts...), link.Fanout().(amqprpc.Option))
}
