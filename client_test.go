package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"runtime"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/amqprpc/amqprpc/codec"
)

func TestTutorialCalls(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)

	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2, 3, 4}, &sum))
	assert.Equal(t, 10, sum)

	var h float64
	require.NoError(t, c.CallContext(context.Background(), "Math.Hypotenuse", Pair{3, 4}, &h))
	assert.Equal(t, 5.0, h)
}

// A call made before any server exists waits in the broker: Dial declared
// the request side, so no sleep is needed.
func TestCallBeforeServerStarts(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	var sum int
	call := c.Go("Math.SumNumbers", []int{5, 6}, &sum, nil)
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 1 }, 5*time.Second, 10*time.Millisecond,
		"the request waits in the queue")
	startServer(t, ns, newRPCServer(t, new(Math)))
	<-call.Done
	require.NoError(t, call.Error)
	assert.Equal(t, 11, sum)
}

func TestRemoteErrors(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)

	var h float64
	err := c.Call("Math.Hypotenuse", Pair{-3, 4}, &h)
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "negative cathetus: {-3 4}", string(se))

	err = c.Call("Math.Nope", 1, &h)
	require.ErrorAs(t, err, &se)
	assert.Contains(t, string(se), "Math.Nope")

	// args of the wrong type: the tutorial's hypotenuse("foo", "bar")
	err = c.Call("Math.Hypotenuse", []string{"foo", "bar"}, &h)
	require.ErrorAs(t, err, &se)
	assert.Contains(t, string(se), "decoding args")

	require.NoError(t, c.Call("Math.Hypotenuse", Pair{3, 4}, &h), "the client keeps working")
	assert.Equal(t, 5.0, h)
}

// Clients with different codecs share one server, which answers each in the
// codec of its request. gob is decoded only by servers configured for it.
func TestCodecsShareAServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	for _, cd := range []codec.Codec{codec.MsgPack, codec.JSON} {
		t.Run(cd.ContentType(), func(t *testing.T) {
			c := dial(t, ns, WithCodec(cd))
			var sum int
			require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2, 3, 4}, &sum))
			assert.Equal(t, 10, sum)
		})
	}
	t.Run("gob refused by default", func(t *testing.T) {
		c := dial(t, ns, WithCodec(codec.Gob))
		var sum int
		err := c.Call("Math.SumNumbers", []int{1}, &sum)
		assert.ErrorContains(t, err, `unknown content type "application/x-gob"`)
	})
	t.Run("gob when the server uses it", func(t *testing.T) {
		ns := brokertest.Namespace(t)
		startServer(t, ns, newRPCServer(t, new(Math)), WithCodec(codec.Gob))
		c := dial(t, ns, WithCodec(codec.Gob))
		var sum int
		require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2, 3, 4}, &sum))
		assert.Equal(t, 10, sum)
	})
}

// The wire mapping, seen by a hand-written AMQP peer standing in for the
// server.
func TestWireMapping(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithCodec(codec.JSON))
	ch := brokertest.Channel(t)
	deliveries, err := ch.Consume("rpc_"+ns+"_request", "", false, false, false, false, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var sum int
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Math.SumNumbers", []int{1, 2}, &sum) }()

	d := <-deliveries
	assert.Equal(t, "Math.SumNumbers", d.Type)
	assert.Equal(t, "application/json", d.ContentType)
	assert.Equal(t, c.ID(), d.ReplyTo)
	assert.Regexp(t, `^[0-9a-f]{12}\.\d+$`, d.CorrelationId)
	assert.Equal(t, d.CorrelationId, d.MessageId)
	assert.Equal(t, "[1,2]", string(d.Body), "the body holds only the args")
	require.NotEmpty(t, d.Expiration, "the deadline travels as expiration")
	assert.False(t, d.Timestamp.IsZero(), "with the moment it was computed")
	assert.Zero(t, d.DeliveryMode, "transient: no delivery mode, which means the same to the broker")
	require.NoError(t, d.Ack(false))

	reply := func(corr string, headers amqp.Table, body string) {
		require.NoError(t, ch.PublishWithContext(ctx, "rpc_"+ns+"_response", d.ReplyTo, false, false, amqp.Publishing{
			CorrelationId: corr, ContentType: "application/json", Headers: headers, Body: []byte(body),
		}))
	}
	// A forged id (another prefix, same seq) completes nothing.
	reply("000000000000."+d.CorrelationId[13:], nil, "99")
	require.Eventually(t, func() bool { return c.Dropped() == 1 }, 5*time.Second, 5*time.Millisecond)
	// The error header becomes an rpc.ServerError.
	reply(d.CorrelationId, amqp.Table{"error": "boom"}, "")
	require.Equal(t, rpc.ServerError("boom"), <-done)
	// A duplicate reply is dropped too.
	reply(d.CorrelationId, nil, "3")
	require.Eventually(t, func() bool { return c.Dropped() == 2 }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, sum)
}

func TestCallContextDeadline(t *testing.T) {
	ns := brokertest.Namespace(t)
	g := newGate()
	startServer(t, ns, newRPCServer(t, g))
	c := dial(t, ns)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var reply string
	err := c.CallContext(ctx, "Gate.Wait", "slow", &reply)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "slow", <-g.entered, "the handler was still running when the call returned")
	close(g.release)
	assert.Equal(t, 0, c.codec.pendingCount(), "the timed-out call is freed")
	assert.Empty(t, reply, "a late reply is not written into reply")

	require.NoError(t, c.CallContext(context.Background(), "Gate.Wait", "next", &reply), "the client keeps working")
	assert.Equal(t, "done next", reply)
}

func TestCallContextCancel(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 1 }, 5*time.Second, 10*time.Millisecond)
		cancel()
	}()
	var sum int
	err := c.CallContext(ctx, "Math.SumNumbers", []int{1}, &sum)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 0, c.codec.pendingCount())
}

// A request whose caller gave up expires in the broker instead of running
// late.
func TestRequestExpiresInBroker(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var sum int
	require.ErrorIs(t, c.CallContext(ctx, "Math.SumNumbers", []int{1}, &sum), context.DeadlineExceeded)
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 0 }, 10*time.Second, 20*time.Millisecond,
		"the broker drops the expired request")

	g := newGate()
	close(g.release)
	startServer(t, ns, newRPCServer(t, g, new(Math)))
	require.NoError(t, c.Call("Math.SumNumbers", []int{2}, &sum), "a later call is served")
	assert.Equal(t, 2, sum)
}

// Call and Go without context use the default call timeout.
func TestDefaultCallTimeout(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithCallTimeout(150*time.Millisecond))
	var sum int
	err := c.Call("Math.SumNumbers", []int{1}, &sum)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	call := c.Go("Math.SumNumbers", []int{1}, &sum, nil)
	<-call.Done
	require.ErrorIs(t, call.Error, context.DeadlineExceeded)
	assert.NotErrorAs(t, call.Error, new(rpc.ServerError))
	assert.Equal(t, 0, c.codec.pendingCount())
}

// 100k calls that time out leave nothing behind, in the codec or in net/rpc.
func TestTimedOutCallsAreFreed(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	const callers, calls = 64, 100_000
	errs := make(chan error, callers)
	for i := 0; i < callers; i++ {
		go func() {
			var err error
			for j := 0; j < calls/callers && err == nil; j++ {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				var sum int
				err = c.CallContext(ctx, "Math.SumNumbers", []int{1}, &sum)
				cancel()
				if errors.Is(err, context.DeadlineExceeded) {
					err = nil
				}
			}
			errs <- err
		}()
	}
	for i := 0; i < callers; i++ {
		require.NoError(t, <-errs)
	}
	assert.Equal(t, 0, c.codec.pendingCount())
	// net/rpc frees its own entry when it reads the codec's cancellation;
	// once a later call completes, everything before it has been read.
	startServer(t, ns, newRPCServer(t, new(Math)))
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1}, &sum))
	assert.Equal(t, 0, rpcPending(c.rc))
}

// Waiting calls cost no goroutine each: 1,000 calls waiting for a server,
// each with its own deadline, add none to the process; they all complete
// once a server comes.
func TestWaitingCallsAddNoGoroutines(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	before := runtime.NumGoroutine()
	calls := make([]*rpc.Call, 1000)
	for i := range calls {
		calls[i] = c.Go("Math.SumNumbers", []int{i}, new(int), nil)
	}
	require.Equal(t, len(calls), c.codec.pendingCount())
	assert.LessOrEqual(t, runtime.NumGoroutine()-before, 2, "goroutines added by 1,000 waiting calls")
	startServer(t, ns, newRPCServer(t, new(Math)))
	for i, call := range calls {
		<-call.Done
		require.NoError(t, call.Error)
		assert.Equal(t, i, *call.Reply.(*int))
	}
}

func TestClientClose(t *testing.T) {
	brokertest.Need(t)
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs after every other cleanup
	ns := brokertest.Namespace(t)
	c, err := Dial(brokertest.URL(), ns)
	require.NoError(t, err)
	call := c.Go("Math.SumNumbers", []int{1}, new(int), nil)
	require.NoError(t, c.Close())
	require.NoError(t, c.Close(), "Close is idempotent")
	<-call.Done
	assert.ErrorIs(t, call.Error, rpc.ErrShutdown)
	assert.ErrorIs(t, c.Call("Math.SumNumbers", []int{1}, new(int)), rpc.ErrShutdown)
}

// Close acks the replies it has read: none goes back to the reply queue
// (where a client that reuses the id would get them again).
func TestCloseAcksTheRepliesRead(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Ledger)))
	for round := range 3 {
		c, err := Dial(brokertest.URL(), ns)
		require.NoError(t, err)
		var reply string
		for i := range 10 { // fewer than a batch of acks
			require.NoError(t, c.Call("Ledger.Record", fmt.Sprint(round, ".", i), &reply))
		}
		queue := "rpc_" + ns + "_" + c.ID() + "_response"
		require.NoError(t, c.Close())
		time.Sleep(100 * time.Millisecond)
		require.Equal(t, 0, brokertest.Messages(t, queue), "round %d: replies went back to the queue", round)
		_, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false)
	}
}

// A call's Args are the caller's own, as with net/rpc, whatever the codec
// was handed with them; a reply that arrives before Go has returned
// completes the call all the same.
func TestCallArgsAreTheCallers(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)
	done := make(chan *rpc.Call, 200)
	want := make(map[*rpc.Call][]int)
	for i := range 200 {
		nums := []int{i, 1}
		var sum int
		call := c.Go("Math.SumNumbers", nums, &sum, done)
		want[call] = nums
	}
	for range 200 {
		call := <-done
		require.NoError(t, call.Error)
		assert.Equal(t, want[call], call.Args)
		nums := want[call]
		assert.Equal(t, nums[0]+nums[1], *call.Reply.(*int))
	}
	routed := To("", []int{2, 3})
	call := c.Go("Math.SumNumbers", routed, new(int), nil)
	<-call.Done
	require.NoError(t, call.Error)
	assert.Same(t, routed, call.Args)

	// Calls that fail before they are sent, read from a done channel
	// shared with a goroutine that looks at their Args (go test -race).
	small := dial(t, ns, WithMaxBodySize(64))
	shared := make(chan *rpc.Call, 10)
	seen := make(chan any, 10)
	go func() {
		for call := range shared {
			seen <- call.Args
		}
	}()
	big := make([]int, 100)
	call = small.Go("Math.SumNumbers", big, new(int), shared)
	assert.Equal(t, big, <-seen) // the call is done once seen
	assert.ErrorIs(t, call.Error, ErrTooLarge)

	require.NoError(t, small.Close())
	nums := []int{1}
	call = small.Go("Math.SumNumbers", nums, new(int), shared)
	assert.Equal(t, nums, <-seen)
	assert.ErrorIs(t, call.Error, rpc.ErrShutdown)
	close(shared)
}
