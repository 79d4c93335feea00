package amqprpc

import (
	"context"
	"fmt"
	"net/rpc"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// 20 deferred calls run at once on one server (the tutorial's asynchronous
// calls): each handler waits until all 20 are inside.
func TestServerRunsCallsConcurrently(t *testing.T) {
	ns := brokertest.Namespace(t)
	b := newBarrier(20)
	startServer(t, ns, newRPCServer(t, b))
	c := dial(t, ns)

	start := time.Now()
	calls := make([]*rpc.Call, 20)
	replies := make([]string, 20)
	for i := range calls {
		calls[i] = c.Go("Barrier.Meet", fmt.Sprint(i), &replies[i], nil)
	}
	for i, call := range calls {
		<-call.Done
		require.NoError(t, call.Error)
		assert.Equal(t, fmt.Sprint(i), replies[i])
	}
	t.Logf("20 concurrent calls took %v", time.Since(start))
	assert.Equal(t, 20, b.max)
}

// Two servers on one namespace share the calls: with prefetch 1 each, two
// calls that wait for each other can only finish if each server takes one.
func TestServersShareTheLoad(t *testing.T) {
	ns := brokertest.Namespace(t)
	b := newBarrier(2)
	s1 := newRPCServer(t, b)
	s2 := newRPCServer(t, b)
	startServer(t, ns, s1, WithPrefetch(1))
	startServer(t, ns, s2, WithPrefetch(1))
	c := dial(t, ns)
	a := c.Go("Barrier.Meet", "a", new(string), nil)
	bb := c.Go("Barrier.Meet", "b", new(string), nil)
	<-a.Done
	<-bb.Done
	require.NoError(t, a.Error)
	require.NoError(t, bb.Error)
}

// A server that dies mid-call has not acked the request (acks follow the
// reply's confirm), so the broker gives it to another server.
func TestServerDiesMidCall(t *testing.T) {
	ns := brokertest.Namespace(t)
	stuck := newGate()
	dying, err := NewServer(brokertest.URL(), ns, newRPCServer(t, stuck))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- dying.Serve(context.Background()) }()

	c := dial(t, ns)
	var reply string
	call := c.Go("Gate.Wait", "x", &reply, nil)
	<-stuck.entered
	// Cut the dying server's connections, for good, as a crash would.
	require.NoError(t, dying.pubConn.Close())
	require.NoError(t, dying.subConn.Close())
	close(stuck.release) // its handler finishes, but can no longer reply
	require.Error(t, <-served, "Serve reports the lost connection")

	healthy := newGate()
	close(healthy.release)
	startServer(t, ns, newRPCServer(t, healthy))
	<-call.Done
	require.NoError(t, call.Error)
	assert.Equal(t, "done x", reply)
	assert.Equal(t, int32(1), healthy.ran.Load())
	_ = dying.Close()
}

// Close lets running handlers reply, returns unstarted requests to the queue
// and stops every goroutine it started.
func TestServerGracefulClose(t *testing.T) {
	brokertest.Need(t)
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) }) // runs after every other cleanup
	ns := brokertest.Namespace(t)
	g := newGate()
	s, err := NewServer(brokertest.URL(), ns, newRPCServer(t, g), WithPrefetch(1))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()

	c, err := Dial(brokertest.URL(), ns)
	require.NoError(t, err)
	var first, second string
	call1 := c.Go("Gate.Wait", "first", &first, nil)
	<-g.entered
	call2 := c.Go("Gate.Wait", "second", &second, nil)

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-served:
		t.Fatal("Serve returned while a handler was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.release)
	require.NoError(t, <-closed)
	require.NoError(t, <-served)
	require.NoError(t, s.Close(), "Close is idempotent")
	require.ErrorIs(t, s.Serve(context.Background()), ErrClosed)

	<-call1.Done
	require.NoError(t, call1.Error, "the running call got its reply")
	assert.Equal(t, "done first", first)
	assert.Equal(t, int32(1), g.ran.Load(), "the second call did not start")
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 1 }, 5*time.Second, 10*time.Millisecond,
		"the unstarted request is back in the queue")

	next := newGate()
	close(next.release)
	s2, err := NewServer(brokertest.URL(), ns, newRPCServer(t, next))
	require.NoError(t, err)
	go func() { served <- s2.Serve(context.Background()) }()
	<-call2.Done
	require.NoError(t, call2.Error)
	assert.Equal(t, "done second", second)
	require.NoError(t, s2.Close())
	require.NoError(t, <-served)
	require.NoError(t, c.Close())
}

// Serve returns when its context ends, and can be called again.
func TestServeContext(t *testing.T) {
	ns := brokertest.Namespace(t)
	s, err := NewServer(brokertest.URL(), ns, newRPCServer(t, new(Math)))
	require.NoError(t, err)
	defer s.Close()
	c := dial(t, ns)

	for i := 0; i < 2; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx) }()
		var sum int
		require.NoError(t, c.Call("Math.SumNumbers", []int{i, 1}, &sum))
		assert.Equal(t, i+1, sum)
		cancel()
		require.NoError(t, <-served)
	}
}

func TestServeTwice(t *testing.T) {
	ns := brokertest.Namespace(t)
	s := startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)
	require.NoError(t, c.Call("Math.SumNumbers", []int{1}, new(int))) // Serve is running now
	assert.ErrorIs(t, s.Serve(context.Background()), ErrServing)
}

// rpc.DefaultServer is used when rcvr is nil.
func TestDefaultServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	require.NoError(t, rpc.RegisterName("Echo"+ns, new(Math)))
	startServer(t, ns, nil)
	c := dial(t, ns)
	var sum int
	require.NoError(t, c.Call("Echo"+ns+".SumNumbers", []int{2, 2}, &sum))
	assert.Equal(t, 4, sum)
}

// Shutdown bounds the graceful stop: with a handler that never returns,
// it gives up when its context ends, Serve returns, and the unanswered
// request goes back to the queue for another server. With handlers that
// finish in time it is Close.
func TestShutdownGivesUpWithItsContext(t *testing.T) {
	ns := brokertest.Namespace(t)
	g := newGate()
	t.Cleanup(func() { close(g.release) }) // the stuck handler ends with the test
	s, err := NewServer(brokertest.URL(), ns, newRPCServer(t, g))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- s.Serve(context.Background()) }()
	c := dial(t, ns)
	call := c.Go("Gate.Wait", "stuck", new(string), nil)
	<-g.entered

	brokertest.ShutdownGivesUp(t, s.Shutdown, 500*time.Millisecond)
	require.NoError(t, <-served)
	assert.NoError(t, s.Close(), "Close after Shutdown")

	// The request is back in the queue, and another server answers it.
	other := newGate()
	close(other.release)
	startServer(t, ns, newRPCServer(t, other))
	<-call.Done
	require.NoError(t, call.Error)
	assert.Equal(t, "done stuck", *call.Reply.(*string))

	// Handlers that finish in time: Shutdown is Close.
	ns2 := brokertest.Namespace(t)
	quick, err := NewServer(brokertest.URL(), ns2, newRPCServer(t, new(Math)))
	require.NoError(t, err)
	go func() { served <- quick.Serve(context.Background()) }()
	var sum int
	require.NoError(t, dial(t, ns2).Call("Math.SumNumbers", []int{1, 2}, &sum))
	require.NoError(t, quick.Shutdown(ctx2(t)))
	require.NoError(t, <-served)
}

// ctx2 is a context that ends with t, or after a minute.
func ctx2(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Every server answers PingMethod with the args it was sent, in their
// codec, whatever it serves (here: nothing), and the name is reserved.
func TestPingAnsweredByEveryServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	s := startServer(t, ns, rpc.NewServer())
	for _, cd := range []codec.Codec{codec.MsgPack, codec.JSON} {
		c := dial(t, ns, WithCodec(cd))
		var got map[string]any
		require.NoError(t, c.Call(PingMethod, map[string]any{"hello": "world"}, &got), cd.ContentType())
		assert.Equal(t, map[string]any{"hello": "world"}, got, cd.ContentType())
		var n int
		require.NoError(t, c.Call(PingMethod, 42, &n))
		assert.Equal(t, 42, n)
	}
	assert.ErrorContains(t, s.RegisterName("amqprpc", new(Math)), "reserved")
}
