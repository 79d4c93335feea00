package amqprpc_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"math"
	"net/rpc"
	"os"
	"strings"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/transport"
)

// Math is the service of amphora's tutorial.
type Math struct{}

type Cathetuses struct{ A, B float64 }

func (*Math) SumNumbers(nums []float64, sum *float64) error {
	for _, n := range nums {
		*sum += n
	}
	return nil
}

func (*Math) Hypotenuse(c Cathetuses, h *float64) error {
	if c.A < 0 || c.B < 0 {
		return fmt.Errorf("a cathetus cannot be negative: %v, %v", c.A, c.B)
	}
	*h = math.Hypot(c.A, c.B)
	return nil
}

func (*Math) SlowSquare(x float64, sq *float64) error {
	time.Sleep(300 * time.Millisecond)
	*sq = x * x
	return nil
}

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// startMathServer runs a server of Math in namespace ns, as a separate
// process would; stop ends it.
func startMathServer(ns string) (stop func()) {
	services := rpc.NewServer()
	if err := services.Register(new(Math)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer(brokerURL(), ns, services)
	if err != nil {
		log.Fatal(err)
	}
	go server.Serve(context.Background())
	return func() { server.Close() }
}

// The tutorial's simple usage: a server process serves Math, a client calls
// it. Any number of servers may serve the namespace.
func ExampleDial() {
	stop := startMathServer("example_dial")
	defer stop()

	client, err := amqprpc.Dial(brokerURL(), "example_dial")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	var sum float64
	if err := client.Call("Math.SumNumbers", []float64{1, 2, 3, 4}, &sum); err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)

	var h float64
	if err := client.Call("Math.Hypotenuse", Cathetuses{3, 4}, &h); err != nil {
		log.Fatal(err)
	}
	fmt.Println(h)
	// Output:
	// 10
	// 5
}

// A handler's error reaches the caller as an rpc.ServerError, and the client
// keeps working.
func ExampleClient_Call_remoteError() {
	stop := startMathServer("example_error")
	defer stop()
	client, err := amqprpc.Dial(brokerURL(), "example_error")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	var h float64
	err = client.Call("Math.Hypotenuse", Cathetuses{-3, 4}, &h)
	var remote rpc.ServerError
	fmt.Println(errors.As(err, &remote), err)

	err = client.Call("Math.Cube", 3.0, &h)
	fmt.Println(err)
	// Output:
	// true a cathetus cannot be negative: -3, 4
	// rpc: can't find method Math.Cube
}

// Deferred calls: Go returns at once, the servers run the calls
// concurrently, and each Call's Done channel says when it is complete.
func ExampleClient_Go() {
	stop := startMathServer("example_go")
	defer stop()
	client, err := amqprpc.Dial(brokerURL(), "example_go")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	squares := make([]float64, 4)
	calls := make([]*rpc.Call, 4)
	for i := range calls {
		calls[i] = client.Go("Math.SlowSquare", float64(i+1), &squares[i], nil)
	}
	// ... do other work while the four 300 ms calls run at once ...
	for i, call := range calls {
		<-call.Done
		if call.Error != nil {
			log.Fatal(call.Error)
		}
		fmt.Println(i+1, squares[i])
	}
	// Output:
	// 1 1
	// 2 4
	// 3 9
	// 4 16
}

// CallContext bounds a call by its context: the caller gets ctx.Err() when
// the deadline passes, and the request expires in the broker.
func ExampleClient_CallContext() {
	stop := startMathServer("example_ctx")
	defer stop()
	client, err := amqprpc.Dial(brokerURL(), "example_ctx")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	var sq float64
	err = client.CallContext(ctx, "Math.SlowSquare", 3.0, &sq)
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// true
}

// A server runs until its context ends or Close; rpc.Register'd receivers
// are served when rcvr is nil.
func ExampleNewServer() {
	if err := rpc.Register(new(Math)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer(brokerURL(), "example_server", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	fmt.Println(server.Serve(ctx)) // blocks until ctx ends
	// Output:
	// <nil>
}

// Many clients and servers in one process share one pair of connections:
// each uses channels on it, and closing them leaves it open.
func ExampleWithConnection() {
	conn, err := transport.Dial(brokerURL(), transport.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close() // after the clients and servers below

	services := rpc.NewServer()
	if err := services.Register(new(Math)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer("", "example_shared", services, amqprpc.WithConnection(conn))
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	go server.Serve(context.Background())

	for _, ns := range []string{"example_shared", "example_shared"} {
		client, err := amqprpc.Dial("", ns, amqprpc.WithConnection(conn))
		if err != nil {
			log.Fatal(err)
		}
		var sum float64
		if err := client.Call("Math.SumNumbers", []float64{1, 2}, &sum); err != nil {
			log.Fatal(err)
		}
		fmt.Println(sum)
		client.Close() // conn stays open
	}
	// Output:
	// 3
	// 3
}

// Errors of the client's own are values to test with errors.Is; only what
// the server said is an rpc.ServerError.
func ExampleClient_CallContext_errors() {
	client, err := amqprpc.Dial(brokerURL(), "example_errors")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	var sum float64
	err = client.Call("Math."+strings.Repeat("x", 300), 1, &sum)
	fmt.Println(errors.Is(err, amqprpc.ErrTooLong))

	err = client.Call("Math.SumNumbers", amqprpc.To("nobody", []float64{1}), &sum)
	fmt.Println(errors.Is(err, amqprpc.ErrNoRoute))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err = client.CallContext(ctx, "Math.SumNumbers", []float64{1}, &sum) // no server runs
	fmt.Println(errors.Is(err, context.DeadlineExceeded))
	// Output:
	// true
	// true
	// true
}

// Search's handlers take a context: it carries the caller's deadline, and
// ends when that passes (or when Server.Shutdown stops waiting).
type Search struct{ stopped chan string }

func (s *Search) Slow(ctx context.Context, query string, hits *[]string) error {
	select {
	case <-time.After(10 * time.Second):
		*hits = append(*hits, "found "+query)
		return nil
	case <-ctx.Done(): // the caller gave up: stop working for nobody
		s.stopped <- "Slow stopped: " + ctx.Err().Error()
		return ctx.Err()
	}
}

func (s *Search) Who(ctx context.Context, _ string, caller *string) error {
	call, _ := amqprpc.RequestFromContext(ctx)
	*caller = call.ServiceMethod + " called by a client with " + fmt.Sprint(time.Until(call.Deadline).Round(time.Second)) + " to spare"
	return nil
}

// Handlers of the form func(ctx, args, reply) error, registered with
// Server.Register, see the caller's deadline and are cancelled when it
// passes; ordinary net/rpc methods of the same receiver work as before.
func ExampleServer_Register() {
	server, err := amqprpc.NewServer(brokerURL(), "example_register", rpc.NewServer())
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	search := &Search{stopped: make(chan string, 1)}
	if err := server.Register(search); err != nil {
		log.Fatal(err)
	}
	go server.Serve(context.Background())

	client, err := amqprpc.Dial(brokerURL(), "example_register")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var hits []string
	err = client.CallContext(ctx, "Search.Slow", "amqp", &hits)
	fmt.Println("caller:", err)
	fmt.Println(<-search.stopped)

	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var who string
	if err := client.CallContext(ctx, "Search.Who", "", &who); err != nil {
		log.Fatal(err)
	}
	fmt.Println(who)
	// Output:
	// caller: context deadline exceeded
	// Slow stopped: context deadline exceeded
	// Search.Who called by a client with 5s to spare
}

// Traces and metrics go to the application's OpenTelemetry providers: the
// global ones by default (otel.SetTracerProvider, otel.SetMeterProvider,
// otel.SetTextMapPropagator), or those given as options, as here. The
// caller's span context travels in the request's headers, so the server's
// span is the client span's child, and a context-aware handler's ctx holds
// it. Here the providers are no-ops; an application passes the SDK's
// (go.opentelemetry.io/otel/sdk), as oteltest/example_test.go does.
func ExampleWithTracerProvider() {
	tp, mp := tracenoop.NewTracerProvider(), metricnoop.NewMeterProvider()
	otelOpts := []amqprpc.Option{
		amqprpc.WithTracerProvider(tp),
		amqprpc.WithMeterProvider(mp),
		amqprpc.WithPropagator(propagation.TraceContext{}),
	}
	services := rpc.NewServer()
	if err := services.Register(new(Math)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer(brokerURL(), "example_otel", services, otelOpts...)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	go server.Serve(context.Background())

	client, err := amqprpc.Dial(brokerURL(), "example_otel", otelOpts...)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// The call's span is a child of the span in ctx.
	ctx, span := tp.Tracer("checkout").Start(context.Background(), "total")
	defer span.End()
	var sum float64
	if err := client.CallContext(ctx, "Math.SumNumbers", []float64{1, 2}, &sum); err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
	// Output:
	// 3
}
