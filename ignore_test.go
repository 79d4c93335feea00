package amqprpc

import (
	"context"
	"fmt"
	"math"
	"net/rpc"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Picky answers only when it is willing to.
type Picky struct {
	name    string
	willing bool
	seen    atomic.Int32
}

func (p *Picky) Take(arg string, reply *string) error {
	p.seen.Add(1)
	if !p.willing {
		return ErrIgnoreRequest
	}
	*reply = p.name
	return nil
}

// A request one direct server ignores is taken by another.
func TestIgnoredRequestGoesToAnotherServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, &Picky{name: "no"}))
	startServer(t, ns, newRPCServer(t, &Picky{name: "yes", willing: true}))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 4; i++ {
		var reply string
		require.NoError(t, c.CallContext(ctx, "Picky.Take", "x", &reply))
		assert.Equal(t, "yes", reply)
	}
}

// When every server ignores a request, the caller hears so after a bounded
// number of tries instead of waiting forever, and the queue is left empty.
func TestRequestIgnoredByEveryServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	p := &Picky{name: "no"}
	startServer(t, ns, newRPCServer(t, p))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reply string
	err := c.CallContext(ctx, "Picky.Take", "x", &reply)
	require.ErrorIs(t, err, ErrNotTaken)
	assert.NotErrorAs(t, err, new(rpc.ServerError), "the client's own error, not a handler's text")
	assert.Equal(t, "amqprpc: no server took the request: ignored 10 times", err.Error())
	assert.Equal(t, int32(ignoreLimit), p.seen.Load())
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 10*time.Millisecond)
}

// Leaver deletes the queue a request came from, then ignores the request.
type Leaver struct{ leave func() }

func (l *Leaver) Take(arg string, reply *string) error {
	l.leave()
	return ErrIgnoreRequest
}

// An ignored request whose queue is gone by the time it is put back fails
// at once with ErrNoRoute, instead of vanishing until the caller's deadline.
func TestIgnoredRequestWhoseQueueIsGone(t *testing.T) {
	ns := brokertest.Namespace(t)
	l := new(Leaver)
	s := startServer(t, ns, newRPCServer(t, l, &Picky{name: "yes", willing: true}))
	c := dial(t, ns)
	queue := userQueue(t, c, ns, "carol")
	l.leave = func() {
		_, err := brokertest.Channel(t).QueueDelete(queue, false, false, false)
		assert.NoError(t, err)
	}
	receiving, stop := context.WithCancel(context.Background())
	received := make(chan struct{})
	go func() {
		defer close(received)
		_, _ = s.ReceiveFromQueue(receiving, "carol", 1)
	}()
	t.Cleanup(func() { stop(); <-received })

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	start := time.Now()
	var reply string
	err := c.CallContext(ctx, "Leaver.Take", To("carol", "x"), &reply)
	require.ErrorIs(t, err, ErrNoRoute)
	assert.Contains(t, err.Error(), `"carol"`)
	assert.Less(t, time.Since(start), 5*time.Second)

	// The server is none the worse for it.
	require.NoError(t, c.CallContext(ctx, "Picky.Take", "x", &reply))
	assert.Equal(t, "yes", reply)
}

// A hostile ignore count (negative, or past the limit) neither crashes nor
// jams the server: the request is answered like any other ignored request.
func TestHostileIgnoreCount(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, &Picky{name: "no"}, &Picky2{}))
	p := newRawPeer(t, ns)
	for i, n := range []int32{math.MinInt32, math.MaxInt32} {
		id := fmt.Sprint("c", i)
		p.send(amqp.Publishing{Type: "Picky.Take", ReplyTo: "rawpeer", CorrelationId: id, MessageId: id,
			ContentType: "application/json", Body: []byte(`"x"`), Headers: amqp.Table{headerIgnored: n}})
		d := p.reply()
		assert.Equal(t, id, d.CorrelationId)
		assert.Contains(t, d.Headers["error"], "no server took the request", "count %d", n)
	}
	// A count of any integer type counts (amqplib sends the smallest type
	// that fits): 9 earlier ignores make this the last.
	for i, n := range []any{int8(9), uint8(9), int16(9), int64(9)} {
		id := fmt.Sprint("typed", i)
		p.send(amqp.Publishing{Type: "Picky.Take", ReplyTo: "rawpeer", CorrelationId: id, MessageId: id,
			ContentType: "application/json", Body: []byte(`"x"`), Headers: amqp.Table{headerIgnored: n}})
		d := p.reply()
		assert.Equal(t, id, d.CorrelationId)
		assert.Equal(t, "amqprpc: no server took the request: ignored 10 times", d.Headers["error"], "%T", n)
	}
	// The server is none the worse for it.
	p.send(amqp.Publishing{Type: "Picky2.Take", ReplyTo: "rawpeer", CorrelationId: "ok", MessageId: "ok",
		ContentType: "application/json", Body: []byte(`"x"`)})
	d := p.reply()
	assert.Equal(t, "ok", d.CorrelationId)
	assert.Equal(t, `"taken"`, string(d.Body))
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond,
		"nothing is left unacked")
}

// Picky2 always takes.
type Picky2 struct{}

func (Picky2) Take(arg string, reply *string) error { *reply = "taken"; return nil }

// A request whose headers the broker took but the server cannot publish
// again (here 70 KiB of them, over the 60 KiB a message's properties may
// take) is answered with an error when it is ignored, not requeued to be
// ignored again without end.
func TestIgnoredRequestWithHeadersTooLargeToPutBack(t *testing.T) {
	ns := brokertest.Namespace(t)
	picky := &Picky{name: "no"}
	startServer(t, ns, newRPCServer(t, picky))
	p := newRawPeer(t, ns)
	p.send(amqp.Publishing{Type: "Picky.Take", ReplyTo: "rawpeer", CorrelationId: "big", MessageId: "big",
		ContentType: "application/json", Body: []byte(`"x"`),
		Headers: amqp.Table{"x-app-context": strings.Repeat("h", 70<<10)}})
	d := p.reply()
	assert.Equal(t, "big", d.CorrelationId)
	assert.Contains(t, d.Headers["error"], "could not be put back")
	assert.Contains(t, d.Headers["error"], "properties and headers of")
	assert.Equal(t, int32(1), picky.seen.Load(), "ignored once, then answered")
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 20*time.Millisecond)
}
