// Package bench measures amqprpc against the alternatives a user has: the
// best hand-written amqp091-go request/reply over the same broker (the
// floor), the same code asking the broker for what amqprpc asks of it (see
// Feature), and net/rpc over loopback TCP without a broker (the ceiling of
// net/rpc itself). Every contender serves the same echo call in this
// process, so CPU and allocations per call cover both sides.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/rpc"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/amqprpc/amqprpc"
)

// Contender is one way of making an echo call.
type Contender interface {
	// Call sends body and returns the echoed body. Safe for concurrent use.
	Call(ctx context.Context, body []byte) ([]byte, error)
	Close() error
}

// Echo is the benchmark's net/rpc service.
type Echo struct{}

// Echo sets reply to args.
func (Echo) Echo(args []byte, reply *[]byte) error {
	*reply = args
	return nil
}

// A Factory starts a contender (its server and its client).
type Factory struct {
	Name  string // in the table
	Short string // in benchmark names; "floor" is what ratios compare to
	Start func(url string) (Contender, error)
}

// Contenders returns the contenders of the comparison, in table order.
func Contenders() []Factory {
	return []Factory{
		{"amqprpc", "amqprpc", startAmqprpc},
		{"amqprpc, OpenTelemetry on", "otel", startAmqprpcOTel},
		{"floor: amqp091-go by hand", "floor", startPlainFloor},
		{"floor with the same broker features", "floorlike", startFloorLike},
		{"net/rpc over TCP (no broker)", "netrpc", startNetRPC},
		{"0x4b53/amqp-rpc v5 (defaults)", "peer", startPeer},
	}
}

func randomName(prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// amqprpcContender is amqprpc with default settings.
type amqprpcContender struct {
	url, ns string
	client  *amqprpc.Client
	server  *amqprpc.Server
	served  chan error
	// shutdown, if set, ends what the contender set up besides (its
	// OpenTelemetry providers).
	shutdown func() error
}

func startAmqprpc(url string) (Contender, error) { return startAmqprpcWith(url) }

// startAmqprpcOTel is amqprpc with tracing and metrics on, as in an
// application that set up the OpenTelemetry SDK: every span sampled and
// batched to an exporter (one that drops them, so that only amqprpc's
// cost and the SDK's are measured), the W3C propagator (traceparent in
// every request), and a meter provider that aggregates every measurement.
func startAmqprpcOTel(url string) (Contender, error) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	c, err := startAmqprpcWith(url, amqprpc.WithTracerProvider(tp), amqprpc.WithMeterProvider(mp),
		amqprpc.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		return nil, err
	}
	c.shutdown = func() error {
		return errors.Join(tp.Shutdown(context.Background()), mp.Shutdown(context.Background()))
	}
	return c, nil
}

func startAmqprpcWith(url string, opts ...amqprpc.Option) (*amqprpcContender, error) {
	ns := randomName("bench_")
	rcvr := rpc.NewServer()
	if err := rcvr.Register(Echo{}); err != nil {
		return nil, err
	}
	server, err := amqprpc.NewServer(url, ns, rcvr, append(opts, amqprpc.WithPrefetch(256))...)
	if err != nil {
		return nil, err
	}
	c := &amqprpcContender{url: url, ns: ns, server: server, served: make(chan error, 1)}
	go func() { c.served <- server.Serve(context.Background()) }()
	if c.client, err = amqprpc.Dial(url, ns, opts...); err != nil {
		_ = server.Close()
		return nil, err
	}
	return c, nil
}

func (c *amqprpcContender) Call(ctx context.Context, body []byte) ([]byte, error) {
	var reply []byte
	err := c.client.CallContext(ctx, "Echo.Echo", body, &reply)
	return reply, err
}

// Close stops the client and the server and deletes the namespace's
// durable request queue and exchanges, which amqprpc leaves for the next
// server; the client's reply queue goes by itself (x-expires).
func (c *amqprpcContender) Close() error {
	err := errors.Join(c.client.Close(), c.server.Close(), <-c.served)
	if c.shutdown != nil {
		err = errors.Join(err, c.shutdown())
	}
	prefix := "rpc_" + c.ns
	return errors.Join(err, onBroker(c.url, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(prefix+"_request", false, false, false)
		return errors.Join(err,
			ch.ExchangeDelete(prefix+"_request", false, false),
			ch.ExchangeDelete(prefix+"_response", false, false))
	}))
}

// onBroker runs f on a channel of a connection of its own to url, for
// deleting what a contender left.
func onBroker(url string, f func(*amqp.Channel) error) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return f(ch)
}

// netRPC is net/rpc with its gob codec over a loopback TCP connection.
type netRPC struct {
	ln     net.Listener
	client *rpc.Client
}

func startNetRPC(string) (Contender, error) {
	rcvr := rpc.NewServer()
	if err := rcvr.Register(Echo{}); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { // rcvr.Accept, without its log line when ln closes
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go rcvr.ServeConn(conn)
		}
	}()
	client, err := rpc.Dial("tcp", ln.Addr().String())
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	return &netRPC{ln: ln, client: client}, nil
}

func (n *netRPC) Call(ctx context.Context, body []byte) ([]byte, error) {
	var reply []byte
	err := n.client.Call("Echo.Echo", body, &reply)
	return reply, err
}

func (n *netRPC) Close() error { return errors.Join(n.client.Close(), n.ln.Close()) }
