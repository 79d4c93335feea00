package amqprpc

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"
	"github.com/amqprpc/amqprpc/internal/transport"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A black-holed connection (open, but nothing gets through either way) is
// noticed by the heartbeat, and once the network is back the client
// reconnects and the call made meanwhile completes within its deadline.
func TestBlackHoledConnection(t *testing.T) {
	ns := brokertest.Namespace(t)
	proxy, viaProxy := brokertest.NewProxy(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	var logs brokertest.Buffer
	c, err := Dial(viaProxy, ns, WithHeartbeat(time.Second),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1}, &sum))

	proxy.Blackhole(true)
	cut := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Math.SumNumbers", []int{40, 2}, &sum) }()

	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "connection lost") }, 30*time.Second, 10*time.Millisecond,
		"the heartbeat notices the dead link")
	// WithHeartbeat's promise: lost after 1.5 to 1.9 intervals without a
	// frame. The last frame came at most half an interval before the cut
	// (the broker's heartbeats), so 1 to 1.9 s after it, and some slack
	// for a loaded machine.
	noticed := time.Since(cut)
	t.Logf("the dead link was noticed %v after the cut", noticed.Round(time.Millisecond))
	assert.Greater(t, noticed, 900*time.Millisecond, "not before 1.5 silent intervals")
	assert.Less(t, noticed, 3*time.Second, "within 1.9 silent intervals")
	proxy.Blackhole(false)
	require.NoError(t, <-done)
	assert.Equal(t, 42, sum)
	assert.Contains(t, logs.String(), "reconnected")
}

// A slow link (200 ms each way) delays calls but loses none.
func TestSlowConnection(t *testing.T) {
	ns := brokertest.Namespace(t)
	proxy, viaProxy := brokertest.NewProxy(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c, err := Dial(viaProxy, ns)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })

	proxy.Latency(200*time.Millisecond, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sum int
			err := c.CallContext(ctx, "Math.SumNumbers", []int{i, 1}, &sum)
			if err == nil && sum != i+1 {
				err = assert.AnError
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// Calls made while the client has no connection wait for it up to their
// deadline: one whose deadline passes fails with DeadlineExceeded and never
// runs, one with time left completes once the connection is back.
func TestCallWhileDisconnected(t *testing.T) {
	ns := brokertest.Namespace(t)
	proxy, viaProxy := brokertest.NewProxy(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger))
	var logs brokertest.Buffer
	c, err := Dial(viaProxy, ns, WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))))
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	var reply string
	require.NoError(t, c.Call("Ledger.Record", "before", &reply))

	proxy.Stop() // the link goes down and stays down: redials are refused
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "connection lost") }, 10*time.Second, 20*time.Millisecond)

	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	require.ErrorIs(t, c.CallContext(short, "Ledger.Record", "too late", &reply), context.DeadlineExceeded)
	require.Eventually(t, func() bool { return c.codec.pub.(*transport.Publisher).Len() == 0 }, 3*time.Second, 20*time.Millisecond,
		"the expired request leaves the publisher's queue while the link is still down")

	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	defer cancelLong()
	done := make(chan error, 1)
	go func() { done <- c.CallContext(long, "Ledger.Record", "waited", &reply) }()
	select {
	case err := <-done:
		t.Fatalf("the call returned while disconnected: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, proxy.Start())
	require.NoError(t, <-done)
	assert.Equal(t, "waited", reply)
	assert.Equal(t, map[string]int{"before": 1, "waited": 1}, ledger.counts(), "the expired call never ran")
}

// A client away long enough for its reply queue to expire finds it gone
// when it reconnects: it declares it again and publishes its pending calls
// again, and the server answers the copy from its reply cache (the reply
// it sent meanwhile found no queue), without running the handler twice.
func TestReplyQueueExpiredWhileAway(t *testing.T) {
	ns := brokertest.Namespace(t)
	g := newGate()
	startServer(t, ns, newRPCServer(t, g))
	proxy, viaProxy := brokertest.NewProxy(t)
	logOpt, log := loggedTo()
	c, err := Dial(viaProxy, ns, WithReplyQueueExpiry(time.Second), logOpt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	queue := "rpc_" + ns + "_" + c.ID() + "_response"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var r string
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Gate.Wait", "x", &r) }()
	<-g.entered
	proxy.Stop()
	released := false
	t.Cleanup(func() {
		if !released {
			close(g.release)
		}
	})
	// rabbitmqctl, not a passive declare: that would count as a use and
	// keep the queue.
	require.Eventually(t, func() bool { return brokertest.Messages(t, queue) == -1 }, 10*time.Second, 100*time.Millisecond,
		"the reply queue expired")
	close(g.release) // its reply finds no queue
	released = true
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, proxy.Start())
	require.NoError(t, <-done)
	assert.Equal(t, "done x", r)
	assert.Equal(t, int32(1), g.ran.Load(), "the handler ran once")
	assert.Contains(t, log.String(), "reply queue was lost")
}

// Given several broker URLs (a cluster's nodes), clients and servers dial
// whichever answers, in a random order, and fail over to another node when
// theirs goes away. Here one "node" never answers, one is a proxy that
// goes away, and one is the broker itself.
func TestSeveralBrokerURLs(t *testing.T) {
	ns := brokertest.Namespace(t)
	proxy, viaProxy := brokertest.NewProxy(t)
	const dead = "amqp://guest:secret@127.0.0.1:1/"
	urls := dead + ", " + viaProxy + ", " + brokertest.URL()
	logOpt, log := loggedTo()
	s, err := NewServer(urls, ns, newRPCServer(t, new(Echo)), logOpt)
	require.NoError(t, err)
	brokertest.Serve(t, s.Serve, s.Close)
	c, err := Dial(urls, ns, logOpt)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	var r string
	for i := range 10 {
		require.NoError(t, c.Call("Echo.Say", fmt.Sprint(i), &r))
	}

	proxy.Stop() // that node is gone; the broker then drops everyone
	brokertest.Rabbitmqctl(t, "close_all_connections", "test: fail over")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, c.CallContext(ctx, "Echo.Say", "after", &r))
	assert.Equal(t, "after", r)
	t.Logf("first call after the fail-over: %v", time.Since(start))
	assert.Contains(t, log.String(), "reconnected")
	assert.NotContains(t, log.String(), "secret", "passwords never logged")

	_, err = Dial(dead+",amqp://guest:secret@127.0.0.1:2/", ns)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "127.0.0.1:1")
	assert.Contains(t, err.Error(), "127.0.0.1:2")
	assert.NotContains(t, err.Error(), "secret")
}
