package fanout_test

import (
	"context"
	"errors"
	"net/rpc"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/fanout"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// Node is one server's service: it counts the broadcasts it ran.
type Node struct {
	name   string
	ran    atomic.Int32
	ignore bool
	gate   chan struct{} // if not nil, calls wait for it
}

func (n *Node) Ping(arg string, reply *string) error {
	if n.gate != nil {
		<-n.gate
	}
	n.ran.Add(1)
	if n.ignore {
		return amqprpc.ErrIgnoreRequest
	}
	*reply = n.name + ":" + arg
	return nil
}

func (n *Node) Fail(arg string, reply *string) error {
	return errors.New(n.name + " failed")
}

func startNode(t *testing.T, ns string, n *Node) *fanout.Server {
	t.Helper()
	rcvr := rpc.NewServer()
	require.NoError(t, rcvr.RegisterName("Node", n))
	s, err := fanout.NewServer(brokertest.URL(), ns, rcvr)
	require.NoError(t, err)
	brokertest.Serve(t, s.Serve, s.Close)
	return s
}

// Sleeper is context-aware.
type Sleeper struct{}

// Until waits until its context ends.
func (Sleeper) Until(ctx context.Context, _ string, reply *string) error {
	<-ctx.Done()
	*reply = "stopped: " + ctx.Err().Error()
	return nil
}

// Left answers how long its context has left, in whole seconds.
func (Sleeper) Left(ctx context.Context, _ string, reply *int) error {
	if dl, ok := ctx.Deadline(); ok {
		*reply = int(time.Until(dl).Round(time.Second) / time.Second)
	}
	return nil
}

// A fanout server registers context-aware handlers and shuts down within
// its context, as amqprpc.Server does.
func TestFanoutServerContextAwareAndShutdown(t *testing.T) {
	ns := brokertest.Namespace(t)
	s, err := fanout.NewServer(brokertest.URL(), ns, rpc.NewServer())
	require.NoError(t, err)
	require.NoError(t, s.RegisterName("Sleeper", Sleeper{}))
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	c := dial(t, ns)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results, err := c.CallAll(ctx, "Sleeper.Left", "x", func() any { return new(int) }, 1)
	require.NoError(t, err)
	require.Len(t, results, 1)
	assert.InDelta(t, 5, *results[0].Reply.(*int), 1, "the handler saw the caller's 5 s deadline")

	c.Go("Sleeper.Until", "y", new(string), nil) // a handler that would run until its 60 s deadline
	time.Sleep(500 * time.Millisecond)           // it is running
	brokertest.ShutdownGivesUp(t, s.Shutdown, 200*time.Millisecond)
	require.NoError(t, <-served)
}

func dial(t *testing.T, ns string, opts ...amqprpc.Option) *fanout.Client {
	t.Helper()
	c, err := fanout.Dial(brokertest.URL(), ns, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

func newString() any { return new(string) }

func replies(results []fanout.Result) []string {
	var out []string
	for _, r := range results {
		if r.Err == nil {
			out = append(out, *r.Reply.(*string))
		}
	}
	return out
}

// Three servers each run a broadcast once; CallAll(…, 3) returns as soon as
// the third reply arrives, long before its context ends.
func TestCallAllGathersEveryServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	nodes := []*Node{{name: "a"}, {name: "b"}, {name: "c"}}
	for _, n := range nodes {
		startNode(t, ns, n)
	}
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := c.CallAll(ctx, "Node.Ping", "x", newString, 3)
	require.NoError(t, err)
	assert.NoError(t, ctx.Err(), "CallAll returned before its context ended")
	assert.ElementsMatch(t, []string{"a:x", "b:x", "c:x"}, replies(results))
	for _, n := range nodes {
		assert.Equal(t, int32(1), n.ran.Load(), n.name)
	}
}

// A server that ignores the broadcast sends nothing and acks it: two
// replies, no error.
func TestCallAllWithAnIgnoringServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	quiet := &Node{name: "quiet", ignore: true}
	startNode(t, ns, &Node{name: "a"})
	startNode(t, ns, &Node{name: "b"})
	startNode(t, ns, quiet)
	c := dial(t, ns)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	results, err := c.CallAll(ctx, "Node.Ping", "y", newString, 0) // until ctx ends
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a:y", "b:y"}, replies(results))
	assert.Equal(t, int32(1), quiet.ran.Load())
	out := brokertest.Rabbitmqctl(t, "list_queues", "-q", "name", "messages_unacknowledged", "messages_ready")
	assert.NotRegexp(t, `rpc_`+ns+`_fanout_\S+\s+[1-9]`, out, "the ignored broadcast was acked")
}

// Remote errors come back per server.
func TestCallAllErrors(t *testing.T) {
	ns := brokertest.Namespace(t)
	startNode(t, ns, &Node{name: "a"})
	startNode(t, ns, &Node{name: "b"})
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := c.CallAll(ctx, "Node.Fail", "z", newString, 2)
	require.NoError(t, err)
	require.Len(t, results, 2)
	var texts []string
	for _, r := range results {
		var se rpc.ServerError
		require.ErrorAs(t, r.Err, &se)
		texts = append(texts, string(se))
	}
	assert.ElementsMatch(t, []string{"a failed", "b failed"}, texts)
}

// Call returns the first reply, as the original did.
func TestCallReturnsFirstReply(t *testing.T) {
	ns := brokertest.Namespace(t)
	startNode(t, ns, &Node{name: "a"})
	startNode(t, ns, &Node{name: "b"})
	c := dial(t, ns)
	var reply string
	require.NoError(t, c.Call("Node.Ping", "first", &reply))
	assert.Contains(t, []string{"a:first", "b:first"}, reply)
	require.Eventually(t, func() bool { return c.Dropped() == 1 }, 10*time.Second, 10*time.Millisecond,
		"the second reply is dropped")
}

// No server at all: CallAll fails at once instead of waiting.
func TestCallAllWithoutServers(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := c.CallAll(ctx, "Node.Ping", "x", newString, 1)
	require.ErrorIs(t, err, amqprpc.ErrNoRoute)
	assert.EqualError(t, err, `amqprpc: no server listens on fanout exchange "rpc_`+ns+`_request"`)
	assert.NoError(t, ctx.Err())
}

// A restarted server, and a server whose connections were cut, keep
// receiving broadcasts.
func TestServerRestartAndReconnect(t *testing.T) {
	ns := brokertest.Namespace(t)
	a := &Node{name: "a"}
	startNode(t, ns, a)
	first, err := fanout.NewServer(brokertest.URL(), ns, func() *rpc.Server {
		r := rpc.NewServer()
		require.NoError(t, r.RegisterName("Node", &Node{name: "b"}))
		return r
	}())
	require.NoError(t, err)
	go first.Serve(context.Background())
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := c.CallAll(ctx, "Node.Ping", "1", newString, 2)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a:1", "b:1"}, replies(results))

	require.NoError(t, first.Close()) // "b" restarts
	startNode(t, ns, &Node{name: "b2"})
	results, err = c.CallAll(ctx, "Node.Ping", "2", newString, 2)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a:2", "b2:2"}, replies(results))

	brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")
	results, err = c.CallAll(ctx, "Node.Ping", "3", newString, 2)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"a:3", "b2:3"}, replies(results))
	assert.Equal(t, int32(3), a.ran.Load(), "every broadcast ran once on a")
}

// A fanout and a direct service cannot share a namespace.
func TestNamespaceConflict(t *testing.T) {
	ns := brokertest.Namespace(t)
	direct, err := amqprpc.Dial(brokertest.URL(), ns)
	require.NoError(t, err)
	defer direct.Close()

	_, err = fanout.Dial(brokertest.URL(), ns)
	require.ErrorIs(t, err, amqprpc.ErrNamespaceConflict)
	assert.Contains(t, err.Error(), "rpc_"+ns+"_request")
	_, err = fanout.NewServer(brokertest.URL(), ns, nil)
	require.ErrorIs(t, err, amqprpc.ErrNamespaceConflict)

	ns2 := brokertest.Namespace(t)
	f, err := fanout.Dial(brokertest.URL(), ns2)
	require.NoError(t, err)
	defer f.Close()
	_, err = amqprpc.NewServer(brokertest.URL(), ns2, nil)
	require.ErrorIs(t, err, amqprpc.ErrNamespaceConflict)
	assert.Contains(t, err.Error(), "fanout")
}

// A broadcast whose method name is over AMQP's 255 bytes, or whose args
// are over the body limit, fails at once and sends nothing; the next
// broadcast works.
func TestCallAllOverLimits(t *testing.T) {
	ns := brokertest.Namespace(t)
	startNode(t, ns, &Node{name: "a"})
	c := dial(t, ns, amqprpc.WithMaxBodySize(1024))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.CallAll(ctx, "Node."+strings.Repeat("P", 300), "x", newString, 1)
	require.ErrorIs(t, err, amqprpc.ErrTooLong)
	_, err = c.CallAll(ctx, "Node.Ping", strings.Repeat("x", 2048), newString, 1)
	require.ErrorIs(t, err, amqprpc.ErrTooLarge)
	results, err := c.CallAll(ctx, "Node.Ping", "x", newString, 1)
	require.NoError(t, err)
	assert.Equal(t, []string{"a:x"}, replies(results))
}

// A broadcast seen twice by a fanout server (redelivered, or published
// again) is answered once: CallAll counts replies per server, and a
// second reply, or an error for a broadcast the server ignored, would
// count twice.
func TestDuplicateBroadcastAnsweredOnce(t *testing.T) {
	ns := brokertest.Namespace(t)
	answers, ignores := &Node{name: "a"}, &Node{name: "b", ignore: true}
	startNode(t, ns, answers)
	startNode(t, ns, ignores)
	ch, replies := brokertest.Replies(t, ns, "rawpeer")
	msg := amqp.Publishing{Type: "Node.Ping", ReplyTo: "rawpeer", CorrelationId: "b1", MessageId: "b1",
		ContentType: "application/json", Body: []byte(`"x"`)}
	for range 3 {
		require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", false, false, msg))
	}
	select {
	case d := <-replies:
		assert.Equal(t, `"a:x"`, string(d.Body))
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	select {
	case d := <-replies:
		t.Fatalf("a second reply: %s %v", d.Body, d.Headers)
	case <-time.After(500 * time.Millisecond):
	}
	assert.Equal(t, int32(1), answers.ran.Load())
	assert.Equal(t, int32(1), ignores.ran.Load())
}
