package amqprpc

// Unit tests of pure logic: no broker needed (go test -short runs them
// anywhere). The integration tests remain the proof of behaviour.

import (
	"errors"
	"fmt"
	"net/rpc"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// The dedupe's verdicts: a new call runs, a duplicate of a running call is
// parked and handed back when it finishes, a duplicate of an answered call
// is answered again with the reply kept; a call that was not answered
// (its server let it go) may run again.
func TestDedupeVerdicts(t *testing.T) {
	d := newDedupe(time.Hour, 1<<20)
	first, dup := &request{}, &request{}
	v, _ := d.begin(7, first)
	assert.Equal(t, runIt, v)
	v, _ = d.begin(7, dup)
	assert.Equal(t, parked, v)
	r := &reply{body: []byte("42")}
	assert.Equal(t, []*request{dup}, d.finish(7, true, r), "the parked duplicate comes back")
	v, kept := d.begin(7, &request{})
	assert.Equal(t, answered, v)
	assert.Same(t, r, kept)

	v, _ = d.begin(8, first)
	assert.Equal(t, runIt, v)
	d.finish(8, false, nil) // requeued, not answered
	v, _ = d.begin(8, first)
	assert.Equal(t, runIt, v, "a call not answered runs when it comes back")

	assert.Nil(t, newDedupe(0, 0), "a zero window turns it off")
}

// The dedupe key is the whole call: two calls sharing a message_id are
// two calls; the same call is the same key; no message id, no key.
func TestDedupeKey(t *testing.T) {
	d := newDedupe(time.Minute, 0)
	call := func(body string) *request {
		return &request{d: amqp.Delivery{ReplyTo: "u", MessageId: "order-1", CorrelationId: "c.1", Type: "M.F",
			ContentType: "application/msgpack", Body: []byte(body)}}
	}
	assert.Equal(t, d.key(call("a")), d.key(call("a")))
	assert.NotEqual(t, d.key(call("a")), d.key(call("b")))
	assert.Zero(t, d.key(&request{d: amqp.Delivery{Body: []byte("a")}}))
}

func TestCorrelationIDs(t *testing.T) {
	id := correlationID("ab12.", 42)
	assert.Equal(t, "ab12.42", id)
	seq, ok := parseCorrelationID("ab12.", id)
	assert.True(t, ok)
	assert.Equal(t, uint64(42), seq)
	for _, bad := range []string{"ab12.", "ab12.x", "ab13.42", "42", "ab12.-1", "ab12.18446744073709551616"} {
		_, ok := parseCorrelationID("ab12.", bad)
		assert.False(t, ok, bad)
	}
}

func TestIgnoreDelay(t *testing.T) {
	var got []time.Duration
	for n := -1; n <= 6; n++ {
		got = append(got, ignoreDelay(n))
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{50 * ms, 50 * ms, 100 * ms, 200 * ms, 400 * ms, 500 * ms, 500 * ms, 500 * ms}, got)
}

func TestDecoderFor(t *testing.T) {
	for ct, want := range map[string]codec.Codec{
		"application/msgpack":              codec.MsgPack,
		"application/x-msgpack":            codec.MsgPack,
		"Application/MsgPack; foo=bar":     codec.MsgPack,
		"application/json":                 codec.JSON,
		"application/json; charset=UTF-8":  codec.JSON,
		"application/json; charset=latin1": nil,
		"application/x-gob":                nil, // only for servers configured with it
		"text/plain":                       nil,
		"":                                 nil,
		"application/json; =":              nil,
	} {
		got, ok := decoderFor(ct, nil)
		assert.Equal(t, want != nil, ok, ct)
		assert.Equal(t, want, got, ct)
	}
	got, ok := decoderFor(codec.Gob.ContentType(), codec.Gob)
	assert.True(t, ok)
	assert.Equal(t, codec.Gob, got, "gob when it is the server's own")
}

// Each publishing outcome maps to the error its call fails with, or none.
func TestOutcomeErrors(t *testing.T) {
	c := &clientCodec{}
	assert.NoError(t, c.outcomeError(transport.Acked, "k", ""))
	assert.NoError(t, c.outcomeError(transport.Expired, "k", ""))
	assert.ErrorIs(t, c.outcomeError(transport.Nacked, "k", ""), ErrRefused)
	assert.ErrorIs(t, c.outcomeError(transport.Failed, "k", ""), ErrRefused)
	assert.Equal(t, rpc.ErrShutdown, c.outcomeError(transport.Abandoned, "k", ""))
	err := c.outcomeError(transport.Returned, "alice", "")
	assert.ErrorIs(t, err, ErrNoRoute)
	assert.Contains(t, err.Error(), `"alice"`)
	assert.Contains(t, c.outcomeError(transport.Returned, "", "rpc_x_request").Error(), "fanout exchange")
}

// ackRecorder is an amqp.Acknowledger that writes down the acks.
type ackRecorder struct{ acks []string }

func (r *ackRecorder) Ack(tag uint64, multiple bool) error {
	r.acks = append(r.acks, fmt.Sprintf("%d/%v", tag, multiple))
	return nil
}
func (r *ackRecorder) Nack(uint64, bool, bool) error { return nil }
func (r *ackRecorder) Reject(uint64, bool) error     { return nil }

// Replies are acked with one multiple ack per batch, never across
// channels, and forgotten with a lost channel.
func TestReplyAcker(t *testing.T) {
	a := newReplyAcker()
	ch1, ch2 := &ackRecorder{}, &ackRecorder{}
	for tag := uint64(1); tag <= replyAckBatch+3; tag++ {
		a.add(&amqp.Delivery{Acknowledger: ch1, DeliveryTag: tag})
	}
	assert.Equal(t, []string{fmt.Sprintf("%d/true", replyAckBatch)}, ch1.acks, "a full batch is acked at once")
	assert.NotNil(t, a.due(), "the rest waits for its delay")
	a.add(&amqp.Delivery{Acknowledger: ch2, DeliveryTag: 1})
	assert.Equal(t, fmt.Sprintf("%d/true", replyAckBatch+3), ch1.acks[1], "a new channel flushes the old one's")
	a.lost()
	a.flush()
	assert.Empty(t, ch2.acks, "a lost channel's replies are not acked: the broker requeued them")
	assert.Nil(t, a.due())

	a.add(&amqp.Delivery{Acknowledger: ch2, DeliveryTag: 2})
	a.since = time.Now().Add(-replyAckDelay)
	assert.Nil(t, a.due(), "overdue: flushed now")
	assert.Equal(t, []string{"2/true"}, ch2.acks)
}

// A ReceiveFromQueue quota counts calls taken until they are decided, and
// only well-formed ones in the end.
func TestQuota(t *testing.T) {
	q := newQuota(2)
	q.take()
	q.take()
	assert.True(t, q.full())
	q.decide(false) // its args did not decode
	assert.False(t, q.full())
	assert.Equal(t, 1, q.remaining())
	assert.Equal(t, int64(1), q.undecided.Load())
	select {
	case <-q.decided:
	default:
		t.Fatal("decide signals")
	}
	assert.False(t, (&quota{}).full(), "no limit")
}

// Options reject what they cannot honour, with an error naming the option;
// nil options are skipped.
func TestOptionValidation(t *testing.T) {
	for name, opt := range map[string]Option{
		"WithPrefetch":         WithPrefetch(0),
		"WithReplyQueueExpiry": WithReplyQueueExpiry(0),
		"WithCallTimeout":      WithCallTimeout(-time.Second),
		"WithMaxBodySize":      WithMaxBodySize(0),
		"WithDeliveryLimit":    WithDeliveryLimit(0),
		"WithClientID":         WithClientID(strings.Repeat("x", 101)),
		"WithQueueType":        WithQueueType("stream"),
	} {
		_, err := newOptions([]Option{opt})
		if assert.Error(t, err, name) {
			assert.Contains(t, err.Error(), name)
		}
	}
	o, err := newOptions([]Option{nil, WithPrefetch(7)})
	require.NoError(t, err)
	assert.Equal(t, 7, o.prefetch)
	_, err = newOptions([]Option{WithReplyQueueExpiry(50 * 24 * time.Hour)})
	assert.True(t, errors.Is(err, ErrTooLong), "an x-expires over 2^32-1 ms")
}
