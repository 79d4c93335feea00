package amqprpc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/rpc"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// Raw echoes raw payloads.
type Raw struct{}

func (Raw) Echo(p []byte, reply *[]byte) error {
	*reply = p
	return nil
}

// Payloads of every size around amqp091-go's boundaries come back whole:
// its 64 KiB read chunks (a 64 KiB payload is a few bytes longer once
// encoded) and the 128 KiB frames, past which a body spans several.
func TestBodiesAcrossFrames(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Raw)))
	c := dial(t, ns)
	sizes := []int{0, 1, 4096, 131063, 131064, 131065, 262144, 1 << 20}
	for n := 65520; n <= 65550; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rand.Uint32())
		}
		var got []byte
		require.NoError(t, c.Call("Raw.Echo", p, &got), "%d bytes", n)
		require.True(t, bytes.Equal(p, got), "%d bytes: the reply differs", n)
	}
}

// wideChannel is a channel on a connection of its own whose frame_max is
// the broker's: it can publish properties larger than 128 KiB.
func wideChannel(t *testing.T) *amqp.Channel {
	conn, err := amqp.DialConfig(brokertest.URL(), amqp.Config{FrameSize: amqp.FrameSizeUnlimited})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// bigHeaders are properties that fill more than the 128 KiB frame_max a
// broker offers by default, and fit the one setFrameMax gives it.
func bigHeaders() amqp.Table {
	return amqp.Table{"x-app-context": strings.Repeat("h", 200<<10)}
}

// A broker configured with a frame_max over 128 KiB takes a request whose
// properties need a frame that large from a foreign client. The server
// reads it and answers; it did not close its connection on the frame (as
// amqp091-go does with one over the size negotiated), which the request,
// put back, would close again on every delivery.
func TestRequestHeadersBeyondDefaultFrameMax(t *testing.T) {
	brokertest.SetFrameMax(t, 1<<20)
	ns := brokertest.Namespace(t)
	s := startServer(t, ns, newRPCServer(t, new(Math)))
	p := newRawPeer(t, ns)
	p.ch = wideChannel(t)
	p.send(amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "big", MessageId: "big",
		ContentType: "application/json", Body: []byte(`[1,2]`), Headers: bigHeaders()})
	d := p.reply()
	assert.Equal(t, "big", d.CorrelationId)
	assert.Nil(t, d.Headers["error"])
	assert.Equal(t, "3", string(d.Body))
	var sum int
	require.NoError(t, dial(t, ns).Call("Math.SumNumbers", []int{2, 3}, &sum))
	assert.Equal(t, 5, sum)
	assert.Zero(t, reconnects(s.pubConn, s.subConn)(), "the server kept its connections")
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond)
}

// The same for a reply, from a foreign server: the client reads it, and
// the call gets its result.
func TestReplyHeadersBeyondDefaultFrameMax(t *testing.T) {
	brokertest.SetFrameMax(t, 1<<20)
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ch := wideChannel(t)
	n, _ := newNames(ns, &options{})
	requests, err := ch.Consume(n.requestQueue, "", true, false, false, false, nil)
	require.NoError(t, err)
	go func() {
		for d := range requests { // a foreign server: echoes the body, with big headers
			_ = ch.Publish(n.responseExchange, d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId,
				ContentType: d.ContentType, Body: d.Body, Headers: bigHeaders()})
		}
	}()
	for i := range 3 {
		p := []byte(fmt.Sprint("call ", i))
		var got []byte
		require.NoError(t, c.Call("Raw.Echo", p, &got))
		assert.Equal(t, p, got)
	}
	assert.Zero(t, c.conn.Reconnects(), "the client kept the connection it consumes on")
}

// Loud fails with an error text of the length asked for.
type Loud struct{}

func (Loud) Fail(n int, reply *int) error { return errors.New(strings.Repeat("e", n)) }
func (Loud) Ok(n int, reply *int) error   { *reply = n; return nil }

// On a broker whose frame_max is smaller than a reply's properties (here a
// handler's error of 10000 bytes, under the 16 KiB an error text may take,
// and a frame_max of 8192: RabbitMQ 4.3 closes connections at 4096), the
// server sends a short error instead, at once. Sent, the reply would have
// closed the server's connection, and every try after it: 10 of them,
// then an error, 7.6 s later (measured before the fix).
func TestReplyPropertiesBeyondFrameMax(t *testing.T) {
	brokertest.SetFrameMax(t, 8192)
	ns := brokertest.Namespace(t)
	s := startServer(t, ns, newRPCServer(t, Loud{}))
	c := dial(t, ns)
	var n int
	require.NoError(t, c.Call("Loud.Ok", 1, &n))
	start := time.Now()
	err := c.Call("Loud.Fail", 10000, &n)
	took := time.Since(start)
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, err.Error(), "frame_max")
	assert.Less(t, took, 2*time.Second)
	require.NoError(t, c.Call("Loud.Ok", 2, &n))
	assert.Equal(t, 2, n)
	assert.Zero(t, reconnects(s.pubConn, s.subConn)(), "the server kept its connections")
}

// The same for a request whose properties outgrow the broker's frame_max
// (baggage, propagated in its headers): the call fails at once with
// ErrTooLong, nothing is sent, and the next call works.
func TestRequestPropertiesBeyondFrameMax(t *testing.T) {
	brokertest.SetFrameMax(t, 8192)
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, Loud{}))
	c := dial(t, ns, WithPropagator(propagation.Baggage{}))
	var members []baggage.Member
	for i := range 3 { // 8.1 KB: under the 8192 bytes of baggage OpenTelemetry allows
		m, err := baggage.NewMember(fmt.Sprint("k", i), strings.Repeat("v", 2700))
		require.NoError(t, err)
		members = append(members, m)
	}
	b, err := baggage.New(members...)
	require.NoError(t, err)
	ctx := baggage.ContextWithBaggage(context.Background(), b)
	var n int
	start := time.Now()
	err = c.CallContext(ctx, "Loud.Ok", 1, &n)
	took := time.Since(start)
	require.ErrorIs(t, err, ErrTooLong)
	assert.Contains(t, err.Error(), "frame_max")
	assert.Less(t, took, 2*time.Second)
	assert.Zero(t, n, "the handler did not run")
	require.NoError(t, c.Call("Loud.Ok", 2, &n))
	assert.Equal(t, 2, n)
}

// The other path a server publishes on: an ignored request put back with
// its ignore count. A request whose properties just fit the broker's
// frame_max (a header frame of 8190 bytes, of 8192) no longer does with
// the count added (about 25 bytes more: past the few bytes RabbitMQ lets
// a frame go over): the caller hears so at once, and the server keeps its
// connections.
func TestIgnoredRequestPutBackBeyondFrameMax(t *testing.T) {
	brokertest.SetFrameMax(t, 8192)
	ns := brokertest.Namespace(t)
	picky := &Picky{name: "no"}
	s := startServer(t, ns, newRPCServer(t, picky))
	p := newRawPeer(t, ns)
	p.send(amqp.Publishing{Type: "Picky.Take", ReplyTo: "rawpeer", CorrelationId: "big", MessageId: "big",
		ContentType: "application/json", Body: []byte(`"x"`),
		Headers: amqp.Table{"x-app-context": strings.Repeat("h", 8101)}})
	d := p.reply()
	assert.Equal(t, "big", d.CorrelationId)
	assert.Contains(t, d.Headers["error"], "could not be put back")
	assert.Contains(t, d.Headers["error"], "frame_max")
	assert.Equal(t, int32(1), picky.seen.Load(), "ignored once, then answered")
	assert.Zero(t, reconnects(s.pubConn, s.subConn)(), "the server kept its connections")
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond)
}
