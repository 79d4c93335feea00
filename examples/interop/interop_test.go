// Package interop_test checks that the Python and Node examples, written
// from PROTOCOL.md alone, interoperate with amqprpc: their clients call a Go
// server, and a Go client calls the Python server.
//
// They need Debian's python3-pika for /usr/bin/python3 and amqplib in
// examples/node/node_modules (scripts/interop.sh installs both; make test
// runs it). Without them the tests skip, unless AMQPRPC_REQUIRE_BROKER=1.
package interop_test

import (
	"bytes"
	"context"
	"errors"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// python is Debian's interpreter, where apt installs python3-pika: not
// whatever python3 comes first on PATH.
const python = "/usr/bin/python3"

// Arith is the service of the examples, as in net/rpc's documentation.
type Arith struct{}

type Args struct{ A, B int }

type Quotient struct{ Quo, Rem int }

func (*Arith) Add(args Args, sum *int) error {
	*sum = args.A + args.B
	return nil
}

func (*Arith) Divide(args Args, q *Quotient) error {
	if args.B == 0 {
		return errors.New("divide by zero")
	}
	*q = Quotient{Quo: args.A / args.B, Rem: args.A % args.B}
	return nil
}

// What both example clients print when they call Arith.
const clientOutput = `Arith.Add {"A":2,"B":3} = 5
Arith.Divide {"A":7,"B":2} = {"Quo":3,"Rem":1}
Arith.Divide {"A":1,"B":0} failed: divide by zero
`

func TestForeignClientsCallGoServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	rcvr := rpc.NewServer()
	require.NoError(t, rcvr.Register(new(Arith)))
	server, err := amqprpc.NewServer(brokertest.URL(), ns, rcvr)
	require.NoError(t, err)
	brokertest.Serve(t, server.Serve, server.Close)

	for _, tc := range []struct {
		name string
		need func(t *testing.T) []string // the command, without the namespace
	}{
		{"python", func(t *testing.T) []string { needPika(t); return []string{python, "../python/client.py"} }},
		{"node", func(t *testing.T) []string { return []string{needNode(t), "../node/client.js"} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := tc.need(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c := command(ctx, cmd[0], append(cmd[1:], ns)...)
			var stdout, stderr bytes.Buffer
			c.Stdout, c.Stderr = &stdout, &stderr
			err := c.Run()
			require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", &stdout, &stderr)
			assert.Equal(t, clientOutput, stdout.String(), "stderr:\n%s", &stderr)
		})
	}
}

func TestGoClientCallsPythonServer(t *testing.T) {
	needPika(t)
	ns := brokertest.Namespace(t)
	startPythonServer(t, ns)

	client, err := amqprpc.Dial(brokertest.URL(), ns, amqprpc.WithCodec(codec.JSON))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, client.Close()) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var sum int
	require.NoError(t, client.CallContext(ctx, "Arith.Add", Args{A: 2, B: 3}, &sum))
	assert.Equal(t, 5, sum)

	var q Quotient
	require.NoError(t, client.CallContext(ctx, "Arith.Divide", Args{A: -7, B: 2}, &q))
	assert.Equal(t, Quotient{Quo: -3, Rem: -1}, q, "Go's truncated division")

	err = client.CallContext(ctx, "Arith.Divide", Args{A: 1, B: 0}, &q)
	var serverErr rpc.ServerError
	require.ErrorAs(t, err, &serverErr)
	assert.Equal(t, "divide by zero", string(serverErr))

	// The caller's span context reaches the Python server in the W3C
	// traceparent header (PROTOCOL.md, "Trace context"). The no-op tracer
	// sends the span context it is given as it is: the server sees it as
	// its parent.
	traced, err := amqprpc.Dial(brokertest.URL(), ns, amqprpc.WithCodec(codec.JSON),
		amqprpc.WithPropagator(propagation.TraceContext{}))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, traced.Close()) })
	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
	})
	var parent struct{ TraceID, ParentID string }
	require.NoError(t, traced.CallContext(trace.ContextWithSpanContext(ctx, caller), "Trace.Parent", 0, &parent))
	assert.Equal(t, caller.TraceID().String(), parent.TraceID)
	assert.Equal(t, caller.SpanID().String(), parent.ParentID)
	err = client.CallContext(ctx, "Trace.Parent", 0, &parent)
	require.ErrorAs(t, err, &serverErr, "no span context, no header")

	err = client.CallContext(ctx, "Arith.Multiply", Args{A: 1, B: 2}, &sum)
	require.ErrorAs(t, err, &serverErr)
	assert.Equal(t, "rpc: can't find method Arith.Multiply", string(serverErr))

	// The example server speaks JSON only: it refuses msgpack with an error reply.
	msgpackClient, err := amqprpc.Dial(brokertest.URL(), ns)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, msgpackClient.Close()) })
	err = msgpackClient.CallContext(ctx, "Arith.Add", Args{A: 2, B: 3}, &sum)
	require.ErrorAs(t, err, &serverErr)
	assert.Equal(t, `request has unknown content type "application/msgpack"`, string(serverErr))

	// But it answers the reserved ping in any content type, as Go servers do.
	var echo string
	require.NoError(t, msgpackClient.CallContext(ctx, amqprpc.PingMethod, "hi", &echo))
	assert.Equal(t, "hi", echo)
}

// startPythonServer runs examples/python/server.py for namespace ns until t
// ends, and returns once it consumes.
func startPythonServer(t *testing.T, ns string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := command(ctx, python, "../python/server.py", ns)
	c.Cancel = func() error { return c.Process.Signal(os.Interrupt) } // it closes its connection
	c.WaitDelay = 10 * time.Second                                    // then it is killed
	out := &watcher{want: "ready\n", seen: make(chan struct{})}
	c.Stdout, c.Stderr = out, out
	require.NoError(t, c.Start())
	exited := make(chan struct{})
	go func() { _ = c.Wait(); close(exited) }()
	t.Cleanup(func() {
		cancel()
		<-exited
	})
	select {
	case <-out.seen:
	case <-exited:
		t.Fatalf("server.py exited before it was ready:\n%s", out)
	case <-time.After(30 * time.Second):
		t.Fatalf("server.py not ready after 30 s:\n%s", out)
	}
}

// command runs name with args in ctx, with the broker's URL in AMQP_URL.
func command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, name, args...)
	c.Env = append(os.Environ(), "AMQP_URL="+brokertest.URL())
	return c
}

// needPika skips t, or fails it when AMQPRPC_REQUIRE_BROKER=1, if Debian's
// Python cannot import pika.
func needPika(t *testing.T) {
	t.Helper()
	brokertest.Need(t)
	if out, err := exec.Command(python, "-c", "import pika").CombinedOutput(); err != nil {
		missing(t, python+" cannot import pika (apt-get install python3-pika): "+strings.TrimSpace(string(out)))
	}
}

// needNode returns the path of node, and skips t (or fails it when
// AMQPRPC_REQUIRE_BROKER=1) if node or amqplib is missing.
func needNode(t *testing.T) string {
	t.Helper()
	brokertest.Need(t)
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node not found: "+err.Error())
	}
	if _, err := os.Stat("../node/node_modules/amqplib"); err != nil {
		missing(t, "amqplib not installed (npm ci in examples/node): "+err.Error())
	}
	return node
}

func missing(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("AMQPRPC_REQUIRE_BROKER") == "1" {
		t.Fatal(what + "; run scripts/interop.sh")
	}
	t.Skip(what + "; scripts/interop.sh installs it")
}

// watcher collects a process's output and closes seen once want appeared.
type watcher struct {
	want string
	seen chan struct{}

	mu sync.Mutex
	// protects buf and found
	buf   bytes.Buffer
	found bool
}

func (w *watcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.found && strings.Contains(w.buf.String(), w.want) {
		w.found = true
		close(w.seen)
	}
	return len(p), nil
}

func (w *watcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
