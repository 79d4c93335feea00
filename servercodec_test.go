package amqprpc

import (
	"bytes"
	"net/rpc"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawPeer is a hand-written AMQP client of namespace ns: it sends requests
// with any properties and reads the replies routed to key "rawpeer".
type rawPeer struct {
	t       *testing.T
	ns      string
	ch      *amqp.Channel
	replies <-chan amqp.Delivery
}

func newRawPeer(t *testing.T, ns string) *rawPeer {
	n, _ := newNames(ns, &options{})
	require.NoError(t, n.requestSide(nil)(brokertest.Channel(t)))
	ch, replies := brokertest.Replies(t, ns, "rawpeer")
	return &rawPeer{t: t, ns: ns, ch: ch, replies: replies}
}

func (p *rawPeer) send(msg amqp.Publishing) {
	require.NoError(p.t, p.ch.Publish("rpc_"+p.ns+"_request", "", false, false, msg))
}

func (p *rawPeer) reply() amqp.Delivery {
	select {
	case d := <-p.replies:
		return d
	case <-time.After(10 * time.Second):
		p.t.Fatal("no reply")
		return amqp.Delivery{}
	}
}

// The server answers in the request's codec, with the request's
// correlation id and delivery mode, routed by reply_to.
func TestServerWireMapping(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	p := newRawPeer(t, ns)

	p.send(amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "c1",
		ContentType: "application/json", Expiration: "60000", Body: []byte("[1,2,3,4]")})
	d := p.reply()
	assert.Equal(t, "c1", d.CorrelationId)
	assert.Equal(t, "application/json", d.ContentType)
	assert.Empty(t, d.Type, "no type: clients match replies by correlation id (PROTOCOL.md, section 4)")
	assert.Zero(t, d.DeliveryMode, "a transient request (no delivery mode) gets a transient reply")
	assert.Empty(t, d.Expiration, "no expiration: the client drops a late reply")
	assert.True(t, d.Timestamp.IsZero())
	assert.Equal(t, "10", string(d.Body))
	assert.NotContains(t, d.Headers, "error")

	p.send(amqp.Publishing{Type: "Math.Hypotenuse", ReplyTo: "rawpeer", CorrelationId: "c2",
		ContentType: "application/json", Body: []byte(`{"A":-1,"B":1}`)})
	d = p.reply()
	assert.Equal(t, "c2", d.CorrelationId)
	assert.Equal(t, "negative cathetus: {-1 1}", d.Headers["error"])
	assert.Empty(t, d.Body)
}

// Malformed requests get an error reply where they have a reply address,
// leave the queue, and the next good call works.
func TestServerRefusesMalformedRequests(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)), WithMaxBodySize(1024))
	p := newRawPeer(t, ns)

	cases := []struct {
		name string
		msg  amqp.Publishing
		want string // in the error header
	}{
		{"no type", amqp.Publishing{ReplyTo: "rawpeer", CorrelationId: "a", ContentType: "application/json", Body: []byte("1")},
			"without type"},
		{"unknown content type", amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "b", ContentType: "text/x-nope", Body: []byte("1")},
			`unknown content type "text/x-nope"`},
		{"too large", amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "c", ContentType: "application/json", Body: make([]byte, 2048)},
			"exceeds the limit of 1024"},
		{"undecodable body", amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "d", ContentType: "application/msgpack", Body: []byte{0xc1}},
			"decoding args"},
		{"unknown method", amqp.Publishing{Type: "Math.Nope", ReplyTo: "rawpeer", CorrelationId: "e", ContentType: "application/json", Body: []byte("1")},
			"Math.Nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			p.send(tc.msg)
			d := p.reply()
			assert.Equal(t, tc.msg.CorrelationId, d.CorrelationId)
			assert.Contains(t, d.Headers["error"], tc.want)
		})
	}
	p.t = t
	// Without a reply address there is no one to answer: the request is
	// dropped from the queue all the same.
	p.send(amqp.Publishing{Type: "Math.SumNumbers", ContentType: "application/json", Body: []byte("[1]")})
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 10*time.Millisecond)

	c := dial(t, ns)
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2}, &sum))
	assert.Equal(t, 3, sum)
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 10*time.Millisecond)
}

// NewClientCodec and NewServerCodec work with plain net/rpc.
func TestPlainNetRPCCodecs(t *testing.T) {
	ns := brokertest.Namespace(t)
	conn, err := amqp.Dial(brokertest.URL())
	require.NoError(t, err)
	defer conn.Close()

	sc, err := NewServerCodec(conn, ns)
	require.NoError(t, err)
	served := make(chan struct{})
	go func() { newRPCServer(t, new(Math)).ServeCodec(sc); close(served) }()

	cc, err := NewClientCodec(conn, ns, WithCallTimeout(5*time.Second))
	require.NoError(t, err)
	client := rpc.NewClientWithCodec(cc)

	var sum int
	require.NoError(t, client.Call("Math.SumNumbers", []int{1, 2, 3, 4}, &sum))
	assert.Equal(t, 10, sum)
	var h float64
	assert.Equal(t, rpc.ServerError("negative cathetus: {-1 0}"), client.Call("Math.Hypotenuse", Pair{-1, 0}, &h))
	require.NoError(t, client.Call("Math.Hypotenuse", Pair{3, 4}, &h))
	assert.Equal(t, 5.0, h)

	require.NoError(t, client.Close())
	assert.ErrorIs(t, client.Call("Math.SumNumbers", []int{1}, &sum), rpc.ErrShutdown)
	require.NoError(t, conn.Close())
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeCodec did not return after its connection closed")
	}
}

// Hostile msgpack bodies (allocation and nesting bombs) are refused with an
// error reply instead of crashing the server; the queue empties and the
// next good call works.
func TestServerSurvivesHostileBodies(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	p := newRawPeer(t, ns)
	nested := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	for _, tc := range []struct {
		name string
		body []byte
	}{
		{"array32 claiming 268M elements", []byte{0xdd, 0x0f, 0xff, 0xff, 0xff}},
		{"map32 claiming 268M pairs", []byte{0xdf, 0x0f, 0xff, 0xff, 0xff}},
		{"str32 claiming 268 MB", []byte{0xdb, 0x0f, 0xff, 0xff, 0xff}},
		{"bin32 claiming 268 MB", []byte{0xc6, 0x0f, 0xff, 0xff, 0xff}},
		{"2 MB of nested arrays", nested(0x91, 2<<20)},
		{"2 MB of nested maps", append(nested(0x81, 1<<20), 0x01)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.t = t
			p.send(amqp.Publishing{Type: "Math.SumNumbers", ReplyTo: "rawpeer", CorrelationId: "bomb",
				ContentType: "application/msgpack", Body: tc.body})
			d := p.reply()
			assert.Equal(t, "bomb", d.CorrelationId)
			assert.Contains(t, d.Headers["error"], "decoding args")
		})
	}
	p.t = t
	c := dial(t, ns)
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2}, &sum))
	assert.Equal(t, 3, sum)
	require.Eventually(t, func() bool { return brokertest.Messages(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 50*time.Millisecond)
}
