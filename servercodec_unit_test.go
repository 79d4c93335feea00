package amqprpc

// Unit tests of the server codec's decisions, driven through a fake
// publisher and a recording acknowledger: no broker.

import (
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// fakePublisher records what a codec publishes; the test gives each
// message its outcome.
type fakePublisher struct {
	mu   sync.Mutex
	sent []fakePublish
	more chan struct{} // capacity 1: sent grew
}

type fakePublish struct {
	m    transport.Message
	done transport.Confirmed
}

func newFakePublisher() *fakePublisher { return &fakePublisher{more: make(chan struct{}, 1)} }

func (f *fakePublisher) Publish(m transport.Message, done transport.Confirmed) error {
	if _, err := transport.Check(&m); err != nil {
		return err
	}
	f.mu.Lock()
	f.sent = append(f.sent, fakePublish{m, done})
	f.mu.Unlock()
	signal(f.more)
	return nil
}

// next waits for the n-th message published (from 0).
func (f *fakePublisher) next(t *testing.T, n int) fakePublish {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		if len(f.sent) > n {
			p := f.sent[n]
			f.mu.Unlock()
			return p
		}
		f.mu.Unlock()
		select {
		case <-f.more:
		case <-deadline:
			t.Fatalf("message %d was never published", n)
		}
	}
}

// settleRecorder is an amqp.Acknowledger that writes down how each
// delivery was settled.
type settleRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *settleRecorder) note(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, s)
	return nil
}
func (r *settleRecorder) Ack(uint64, bool) error { return r.note("ack") }
func (r *settleRecorder) Nack(_ uint64, _, requeue bool) error {
	if requeue {
		return r.note("requeue")
	}
	return r.note("nack")
}
func (r *settleRecorder) Reject(_ uint64, requeue bool) error {
	if requeue {
		return r.note("requeue")
	}
	return r.note("reject")
}
func (r *settleRecorder) settled() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

// unitServerCodec is a server codec on fake parts, and a request it has
// taken, as next would hand it out.
func unitServerCodec(t *testing.T, headers amqp.Table) (*serverCodec, *fakePublisher, *request, *settleRecorder) {
	t.Helper()
	o, err := newOptions(nil)
	require.NoError(t, err)
	n, err := newNames("unit", o)
	require.NoError(t, err)
	pub := newFakePublisher()
	c := newServerCodec(serverCodecConfig{names: n, opts: o, pub: pub, acker: transport.NewAcker(), seen: newDedupe(time.Minute, 1<<20)})
	rec := &settleRecorder{}
	body, err := codec.MsgPack.Marshal("x")
	require.NoError(t, err)
	req := &request{owner: c, codec: codec.MsgPack, d: amqp.Delivery{
		Acknowledger: rec, DeliveryTag: 1, Headers: headers, Exchange: n.requestExchange,
		ReplyTo: "u", CorrelationId: "c.1", MessageId: "c.1", Type: "M.F", ContentType: codec.MsgPack.ContentType(), Body: body}}
	c.acker.Take(&req.d)
	c.inflight.Add(1)
	c.take()
	req.key = c.seen.key(req)
	v, _ := c.seen.begin(req.key, req)
	require.Equal(t, runIt, v)
	return c, pub, req, rec
}

// A reply the broker nacks is sent once more, after a pause; refused
// again, it is replaced by a short error reply; if that is refused too,
// the request is rejected (not requeued, which would run it again and
// again), and the reply is kept for the copy of the call that the client
// publishes again.
func TestUnitRefusedReplyThenRefusedError(t *testing.T) {
	c, pub, req, rec := unitServerCodec(t, nil)
	key := req.key
	require.NoError(t, c.respond(req, "", "answer"))
	first := pub.next(t, 0)
	assert.Equal(t, "u", first.m.Key)
	assert.Equal(t, c.responseExchange, first.m.Exchange)
	nacked := time.Now()
	first.done(transport.Nacked)

	again := pub.next(t, 1)
	assert.GreaterOrEqual(t, time.Since(nacked), replyResendDelay, "after the pause")
	assert.Equal(t, first.m.Body, again.m.Body, "the reply itself, once more")
	assert.Nil(t, again.m.Headers[headerError])
	assert.Empty(t, rec.settled(), "not settled before the resent reply's outcome")
	again.done(transport.Nacked)

	second := pub.next(t, 2)
	assert.Equal(t, "amqprpc: the broker refused the reply (nacked)", second.m.Headers[headerError])
	assert.Empty(t, rec.settled(), "not settled before the error reply's outcome")
	second.done(transport.Nacked)
	assert.Equal(t, []string{"reject"}, rec.settled())

	v, kept := c.seen.begin(key, &request{})
	assert.Equal(t, answered, v)
	require.NotNil(t, kept)
	var got string
	require.NoError(t, codec.MsgPack.Unmarshal(kept.body, &got))
	assert.Equal(t, "answer", got, "the original reply is kept for the copy")
}

// A confirmed reply acks its request; an abandoned one (the publisher
// closed) requeues it for another server.
func TestUnitReplyOutcomesSettleTheRequest(t *testing.T) {
	for outcome, want := range map[transport.Outcome]string{transport.Acked: "ack", transport.Abandoned: "requeue"} {
		c, pub, req, rec := unitServerCodec(t, nil)
		require.NoError(t, c.respond(req, "", "answer"))
		pub.next(t, 0).done(outcome)
		c.acker.Sync()
		assert.Equal(t, []string{want}, rec.settled(), outcome.String())
	}
}

// An ignored request goes back where it came from, mandatory, with its
// count of ignores; if its queue is gone the caller gets ErrNoRoute's
// code, and after ignoreLimit ignores ErrNotTaken's.
func TestUnitIgnoredRequest(t *testing.T) {
	c, pub, req, rec := unitServerCodec(t, nil)
	require.NoError(t, c.respond(req, ErrIgnoreRequest.Error(), nil))
	again := pub.next(t, 0)
	assert.True(t, again.m.Mandatory)
	assert.Equal(t, req.d.Exchange, again.m.Exchange)
	assert.Equal(t, int32(1), again.m.Headers[headerIgnored])
	again.done(transport.Returned)
	noRoute := pub.next(t, 1)
	assert.Equal(t, codeNoRoute, noRoute.m.Headers[headerErrorCode])
	noRoute.done(transport.Acked)
	c.acker.Sync()
	assert.Equal(t, []string{"ack"}, rec.settled())

	c, pub, req, _ = unitServerCodec(t, amqp.Table{headerIgnored: int64(ignoreLimit - 1)})
	require.NoError(t, c.respond(req, ErrIgnoreRequest.Error(), nil))
	last := pub.next(t, 0)
	assert.Equal(t, codeNotTaken, last.m.Headers[headerErrorCode])
	assert.Equal(t, "amqprpc: no server took the request: ignored 10 times", last.m.Headers[headerError])
}
