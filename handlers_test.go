package amqprpc

import (
	"context"
	"fmt"
	"net/rpc"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// Clock has context-aware methods and an ordinary one.
type Clock struct {
	waited chan error // what Wait's context ended with
}

// Deadline returns its context's deadline, in ms since the epoch.
func (*Clock) Deadline(ctx context.Context, _ string, ms *int64) error {
	d, ok := ctx.Deadline()
	if !ok {
		return assert.AnError
	}
	*ms = d.UnixMilli()
	return nil
}

// Wait waits for its context to end.
func (c *Clock) Wait(ctx context.Context, _ string, _ *string) error {
	<-ctx.Done()
	c.waited <- ctx.Err()
	return ctx.Err()
}

// Info returns what RequestFromContext says.
func (*Clock) Info(ctx context.Context, _ string, r *Request) error {
	got, ok := RequestFromContext(ctx)
	if !ok {
		return assert.AnError
	}
	*r = got
	return nil
}

// Sum takes a struct pointer, as net/rpc methods may.
func (*Clock) Sum(_ context.Context, p *Pair, sum *float64) error {
	*sum = p.A + p.B
	return nil
}

// Plain is an ordinary net/rpc method of the same receiver.
func (*Clock) Plain(arg string, reply *string) error {
	*reply = "plain " + arg
	return nil
}

// Context-aware handlers get the caller's deadline (within 50 ms), are
// cancelled when it passes, learn their call's details, and live next to
// ordinary methods; net/rpc's error texts are kept.
func TestContextAwareHandlers(t *testing.T) {
	ns := brokertest.Namespace(t)
	clock := &Clock{waited: make(chan error, 1)}
	s, err := NewServer(brokertest.URL(), ns, rpc.NewServer())
	require.NoError(t, err)
	require.NoError(t, s.Register(clock))
	brokertest.Serve(t, s.Serve, s.Close)
	c := dial(t, ns)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	want, _ := ctx.Deadline()
	var ms int64
	require.NoError(t, c.CallContext(ctx, "Clock.Deadline", "", &ms))
	got := time.UnixMilli(ms)
	assert.WithinDuration(t, want, got, 50*time.Millisecond, "the handler's deadline is the caller's")
	t.Logf("handler's deadline - caller's: %v", got.Sub(want))

	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	assert.ErrorIs(t, c.CallContext(short, "Clock.Wait", "", new(string)), context.DeadlineExceeded)
	select {
	case err := <-clock.waited:
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), time.Second, "cancelled with the caller's deadline")
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}

	var info Request
	require.NoError(t, c.Call("Clock.Info", "", &info))
	assert.Equal(t, "Clock.Info", info.ServiceMethod)
	assert.Equal(t, c.ID(), info.ClientID)
	assert.Equal(t, "", info.RoutingKey)
	assert.False(t, info.Redelivered)
	assert.False(t, info.Deadline.IsZero(), "the default call timeout")

	var sum float64
	require.NoError(t, c.Call("Clock.Sum", Pair{A: 1, B: 2}, &sum))
	assert.Equal(t, 3.0, sum)
	var plain string
	require.NoError(t, c.Call("Clock.Plain", "x", &plain))
	assert.Equal(t, "plain x", plain)

	// Shutdown, once its own context ends, cancels the handlers still
	// running.
	waiting := c.Go("Clock.Wait", "", new(string), nil) // the default 60 s timeout
	time.Sleep(200 * time.Millisecond)                  // taken by the server
	defer func() {
		shutdown, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		assert.ErrorIs(t, s.Shutdown(shutdown), context.DeadlineExceeded)
		select {
		case err := <-clock.waited:
			assert.ErrorIs(t, err, context.Canceled)
		case <-time.After(5 * time.Second):
			t.Error("Shutdown did not cancel the handler's context")
		}
		_ = waiting
	}()

	err = c.Call("Clock.Nope", "", new(string))
	assert.Equal(t, rpc.ServerError("rpc: can't find method Clock.Nope"), err)
	err = c.Call("Clock.Sum", "not a pair", &sum)
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, string(se), "amqprpc: decoding args")
}

// A receiver with context-aware methods only is served too, without
// net/rpc; registration errors are net/rpc's.
func TestRegisterContextAware(t *testing.T) {
	s := &Server{rcvr: rpc.NewServer()}
	require.NoError(t, s.RegisterName("Waiter", &OnlyCtx{}))
	assert.EqualError(t, s.RegisterName("Waiter", &OnlyCtx{}), "rpc: service already defined: Waiter")
	assert.EqualError(t, s.Register(&struct{}{}), "rpc.Register: no service name for type *struct {}")
	assert.EqualError(t, s.Register(new(unexported)), "rpc.Register: type unexported is not exported")
	assert.EqualError(t, s.Register(new(NoMethods)), "rpc.Register: type NoMethods has no exported methods of suitable type")
	_, m, _ := s.ctxHandlers.lookup("Waiter.Do")
	assert.NotNil(t, m)
	_, m, text := s.ctxHandlers.lookup("Waiter.Nope")
	assert.Nil(t, m)
	assert.Equal(t, "rpc: can't find method Waiter.Nope", text)

	// A name taken by context-aware methods is refused before anything is
	// registered with net/rpc: no half-registered, unreachable service.
	assert.EqualError(t, s.RegisterName("Waiter", new(Math)), "rpc: service already defined: Waiter")
	assert.NoError(t, s.rcvr.RegisterName("Waiter", new(Math)), "net/rpc does not have it")
}

// BusyCtx is a context-aware handler that declines every call with a
// wrapped ErrIgnoreRequest.
type BusyCtx struct{ seen atomic.Int32 }

func (b *BusyCtx) Take(_ context.Context, _ string, _ *string) error {
	b.seen.Add(1)
	return fmt.Errorf("busy right now: %w", ErrIgnoreRequest)
}

// A context-aware handler may wrap ErrIgnoreRequest: the request is
// ignored (put back, then ErrNotTaken), not answered with the text.
func TestContextAwareHandlerIgnores(t *testing.T) {
	ns := brokertest.Namespace(t)
	s := startServer(t, ns, rpc.NewServer())
	busy := new(BusyCtx)
	require.NoError(t, s.Register(busy))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := c.CallContext(ctx, "BusyCtx.Take", "x", new(string))
	require.ErrorIs(t, err, ErrNotTaken)
	assert.Equal(t, int32(ignoreLimit), busy.seen.Load())
}

type OnlyCtx struct{}

func (*OnlyCtx) Do(context.Context, string, *string) error { return nil }

type unexported struct{}

func (*unexported) Do(context.Context, string, *string) error { return nil }

type NoMethods struct{}

// A request whose deadline passed while it waited in the queue (its
// publish timestamp plus its expiration) is not run: it is acked, and the
// error reply saying so expires with it, unsent.
func TestExpiredRequestIsNotRun(t *testing.T) {
	ns := brokertest.Namespace(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger))
	ch, replies := brokertest.Replies(t, ns, "probe")
	publish := func(arg string, sent time.Time) {
		body, err := codec.MsgPack.Marshal(arg)
		require.NoError(t, err)
		require.NoError(t, ch.PublishWithContext(context.Background(), "rpc_"+ns+"_request", "", false, false, amqp.Publishing{
			ContentType: codec.MsgPack.ContentType(), CorrelationId: arg, MessageId: arg, ReplyTo: "probe",
			Type: "Ledger.Record", Expiration: "5000", Timestamp: sent, Body: body}))
	}
	publish("stale", time.Now().Add(-10*time.Second)) // as if it had waited 10 s
	publish("fresh", time.Now())
	select {
	case d := <-replies:
		assert.Equal(t, "fresh", d.CorrelationId, "no reply to the stale request")
	case <-time.After(10 * time.Second):
		t.Fatal("no reply to the fresh request")
	}
	assert.Equal(t, map[string]int{"fresh": 1}, ledger.counts(), "the stale request did not run")
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 50*time.Millisecond,
		"the stale request was acked")
	select {
	case d := <-replies:
		t.Fatalf("a reply to %s", d.CorrelationId)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestRequestDeadline(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 500e6, time.UTC)
	assert.True(t, requestDeadline("", time.Time{}, now).IsZero())
	assert.True(t, requestDeadline("x", time.Time{}, now).IsZero())
	assert.Equal(t, now.Add(2*time.Second), requestDeadline("2000", time.Time{}, now), "no timestamp: from when it was taken")
	sent := now.Truncate(time.Second) // AMQP timestamps are whole seconds
	assert.Equal(t, now.Add(2*time.Second), requestDeadline("2000", sent, now), "fresh: from when it was taken")
	assert.Equal(t, now.Add(-10*time.Second).Truncate(time.Second).Add(3*time.Second),
		requestDeadline("2000", now.Add(-10*time.Second).Truncate(time.Second), now), "waited 10 s: from the timestamp")
}
