package amqprpc

import (
	"context"
	"fmt"
	"net/rpc"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// Ledger records how many times each call ran.
type Ledger struct {
	mu  sync.Mutex
	ran map[string]int
}

func (l *Ledger) Record(id string, reply *string) error {
	l.mu.Lock()
	if l.ran == nil {
		l.ran = make(map[string]int)
	}
	l.ran[id]++
	l.mu.Unlock()
	*reply = id
	return nil
}

// ranMoreThanOnce is the number of calls that ran more than once.
func (l *Ledger) ranMoreThanOnce() int {
	n := 0
	for _, k := range l.counts() {
		if k != 1 {
			n++
		}
	}
	return n
}

func (l *Ledger) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.ran))
	for k, v := range l.ran {
		out[k] = v
	}
	return out
}

// Panicky panics on demand.
type Panicky struct{}

func (Panicky) Boom(msg string, reply *string) error { panic(msg) }

func (Panicky) Fine(msg string, reply *string) error { *reply = msg; return nil }

// A panicking handler is answered with an error and acked; the server keeps
// serving.
func TestHandlerPanicIsRecovered(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, Panicky{}))
	c := dial(t, ns)
	var reply string
	err := c.Call("Panicky.Boom", "kaboom", &reply)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Panicky.Boom panicked: kaboom")
	require.NoError(t, c.Call("Panicky.Fine", "still here", &reply))
	assert.Equal(t, "still here", reply)
	assert.Equal(t, 0, brokertest.QueueDepth(t, "rpc_"+ns+"_request"))
}

// The same request published again (as a client does when it lost the
// broker's confirm, or its reply queue) runs once: a copy that comes while
// it runs waits for its reply, one that comes after it is answered again
// with the reply kept, not acked silently.
func TestDuplicateRequestRunsOnce(t *testing.T) {
	ns := brokertest.Namespace(t)
	g := newGate()
	startServer(t, ns, newRPCServer(t, g))
	p := newRawPeer(t, ns)
	msg := amqp.Publishing{Type: "Gate.Wait", ReplyTo: "rawpeer", CorrelationId: "dup", MessageId: "dup",
		ContentType: "application/json", Body: []byte(`"x"`)}
	p.send(msg)
	<-g.entered
	p.send(msg) // while the first runs: parked behind it
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 10*time.Millisecond)
	close(g.release)
	first := p.reply()
	assert.Equal(t, "dup", first.CorrelationId)
	assert.Nil(t, first.Headers[headerError])
	for i, label := range []string{"parked copy", "copy after the answer"} {
		if i == 1 {
			p.send(msg)
		}
		again := p.reply()
		assert.Equal(t, "dup", again.CorrelationId, label)
		assert.Equal(t, first.Body, again.Body, label)
		assert.Nil(t, again.Headers[headerError], label)
	}
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 50*time.Millisecond,
		"ready and unacked")
	assert.Equal(t, int32(1), g.ran.Load(), "the handler ran once")
}

// The broker closes every connection twice while 48 callers call for
// several seconds: no call fails, and every handler ran once per call.
func TestNoCallLostWhenConnectionsDrop(t *testing.T) {
	ns := brokertest.Namespace(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger))
	c := dial(t, ns)

	const callers = 48
	stop := runLoad(callers, func(g, j int) error { return recordCall(c, g, j) })
	start := time.Now()
	time.Sleep(1500 * time.Millisecond)
	brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")
	time.Sleep(1500 * time.Millisecond)
	brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")
	time.Sleep(1500 * time.Millisecond)
	res := stop()
	elapsed := time.Since(start)

	twice := ledger.ranMoreThanOnce()
	t.Logf("%d calls by %d callers in %v with 2 connection drops: %d failed, %d ran more than once, %d replies dropped",
		res.calls, callers, elapsed.Round(time.Millisecond), res.failed, twice, c.Dropped())
	require.Zero(t, res.failed, "first failure: %v", res.first)
	assert.Zero(t, twice, "handlers that ran more than once")
	assert.Equal(t, int(res.calls), len(ledger.counts()), "every call ran")
}

// BadReply's encoding panics, as a user's EncodeMsgpack might.
type BadReply struct{}

func (BadReply) EncodeMsgpack(*msgpack.Encoder) error { panic("cannot encode") }

func (Panicky) Bad(msg string, reply *BadReply) error { return nil }

func (Panicky) Exit(msg string, reply *string) error {
	runtime.Goexit()
	return nil
}

// A reply whose encoding panics, or a handler that calls runtime.Goexit,
// still gets an error reply and its request acked.
func TestReplyEncodingPanicAndGoexit(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, Panicky{}))
	c := dial(t, ns)
	err := c.Call("Panicky.Bad", "x", new(BadReply))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "encoding reply: panic: cannot encode")
	err = c.Call("Panicky.Exit", "x", new(string))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Panicky.Exit ended without a reply")
	var reply string
	require.NoError(t, c.Call("Panicky.Fine", "ok", &reply))
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond)
}

// refusedBodySize returns a body size the broker refuses, until t ends:
// RabbitMQ 3.x takes a lowered max_message_size at run time (4096 here,
// so 8 KiB); 4.x reads it only at boot, so the size is over its own limit
// (16 MiB by default). Clients and servers that send it need a
// WithMaxBodySize of twice that.
func refusedBodySize(t *testing.T) int {
	t.Helper()
	if v := lastLine(brokertest.Rabbitmqctl(t, "eval", "rabbit_misc:version().")); !strings.HasPrefix(v, `"3.`) {
		limit := lastLine(brokertest.Rabbitmqctl(t, "eval", "application:get_env(rabbit, max_message_size)."))
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(limit, "{ok,"), "}"))
		require.NoError(t, err, "max_message_size of broker %s: %s", v, limit)
		return n + 64<<10
	}
	was := lastLine(brokertest.Rabbitmqctl(t, "eval", "application:get_env(rabbit, max_message_size)."))
	restore := "application:unset_env(rabbit, max_message_size)."
	if v, ok := strings.CutPrefix(was, "{ok,"); ok {
		restore = fmt.Sprintf("application:set_env(rabbit, max_message_size, %s).", strings.TrimSuffix(v, "}"))
	}
	t.Cleanup(func() { brokertest.Rabbitmqctl(t, "eval", restore) })
	brokertest.Rabbitmqctl(t, "eval", "application:set_env(rabbit, max_message_size, 4096).")
	return 8192
}

// A request the broker closes the channel over every time (here: larger
// than its max_message_size) fails its call once the publisher gives up,
// instead of waiting for the deadline; requests sent with it are not given
// up with it, and the client goes on working.
func TestRequestTheBrokerKeepsRefusing(t *testing.T) {
	ns := brokertest.Namespace(t)
	size := refusedBodySize(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger), WithMaxBodySize(2*size))
	c := dial(t, ns, WithMaxBodySize(2*size))
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	start := time.Now()
	big := make(chan error, 1)
	go func() { big <- c.CallContext(ctx, "Ledger.Record", strings.Repeat("x", size), new(string)) }()
	small := make([]*rpc.Call, 8)
	for i := range small {
		small[i] = c.Go("Ledger.Record", fmt.Sprint("small ", i), new(string), nil)
	}
	err := <-big
	require.ErrorIs(t, err, ErrRefused)
	assert.ErrorIs(t, err, errAbandoned)
	assert.NotErrorAs(t, err, new(rpc.ServerError), "a local failure, not the server's word")
	assert.Less(t, time.Since(start), 20*time.Second, "well before the 45 s deadline")
	for i, call := range small {
		<-call.Done
		assert.NoError(t, call.Error, "small %d", i)
	}
	var reply string
	require.NoError(t, c.CallContext(ctx, "Ledger.Record", "after", &reply))
	counts := ledger.counts()
	assert.Equal(t, 1, counts["after"])
	for i := range small {
		assert.Equal(t, 1, counts[fmt.Sprint("small ", i)])
	}
}

// A request queue that refuses requests for a while (here: full, with
// overflow reject-publish; on a cluster: a quorum queue between leaders)
// nacks them: a call is published again within its deadline, succeeds once
// the queue takes it, and otherwise fails with ErrRefused, matching its
// deadline too, instead of failing at the first nack.
func TestRefusedRequestIsHeldWithinItsDeadline(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns) // declares the request queue; no server yet
	queue := "rpc_" + ns + "_request"
	policy := "amqprpc-test-" + ns
	brokertest.Rabbitmqctl(t, "set_policy", policy, "^"+queue+"$", `{"max-length":1,"overflow":"reject-publish"}`, "--apply-to", "queues")
	t.Cleanup(func() { brokertest.Rabbitmqctl(t, "clear_policy", policy) })

	first := c.Go("Math.SumNumbers", []int{1}, new(int), nil) // fills the queue
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, queue) == 1 }, 5*time.Second, 10*time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	err := c.CallContext(ctx, "Math.SumNumbers", []int{2}, new(int))
	require.ErrorIs(t, err, ErrRefused)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorIs(t, err, ErrQueueUnavailable)
	assert.GreaterOrEqual(t, time.Since(start), 900*time.Millisecond, "held until its deadline, not failed at the first nack")

	var sum int
	held := c.Go("Math.SumNumbers", []int{20, 22}, &sum, nil)
	time.Sleep(500 * time.Millisecond)
	select {
	case call := <-held.Done:
		t.Fatalf("the call ended while the queue was full: %v", call.Error)
	default:
	}
	startServer(t, ns, newRPCServer(t, new(Math))) // drains the queue
	require.NoError(t, (<-first.Done).Error)
	require.NoError(t, (<-held.Done).Error)
	assert.Equal(t, 42, sum)
}
