package transport_test

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
	"github.com/amqprpc/amqprpc/internal/transport"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// publisherAndQueue declares a durable queue named prefix and a unique
// suffix (RabbitMQ 4.3 may deny transient non-exclusive queues), and opens
// a connection and a publisher on it; all of them go when t ends.
func publisherAndQueue(t *testing.T, prefix string) (string, *transport.Conn, *transport.Publisher) {
	brokertest.Need(t)
	queue := prefix + brokertest.Namespace(t)
	_, err := brokertest.Channel(t).QueueDeclare(queue, true, false, false, false, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false) })
	conn, err := transport.Open(brokertest.URL(), transport.Config{}, slog.Default())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	pub, err := transport.NewPublisher(conn, slog.Default(), nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })
	return queue, conn, pub
}

// Of mandatory messages in flight at once that share a message id (clients
// other than amqprpc may reuse ids), only the ones no queue takes come back
// Returned: returns are matched by reply_to, correlation_id and message_id,
// not by message id alone.
func TestPublisherMatchesReturnsToTheirMessages(t *testing.T) {
	queue, _, pub := publisherAndQueue(t, "test_returns_")

	const pairs = 200
	var mu sync.Mutex
	got := make(map[string]transport.Outcome)
	var wg sync.WaitGroup
	publish := func(id, key string) {
		wg.Add(1)
		require.NoError(t, pub.Publish(transport.Message{
			Key:        key, // on the default exchange: a queue name, or nowhere
			Mandatory:  true,
			Publishing: amqp.Publishing{MessageId: "same", CorrelationId: id, ReplyTo: "r", Body: []byte(id)},
		}, func(o transport.Outcome) {
			mu.Lock()
			got[id] = o
			mu.Unlock()
			wg.Done()
		}))
	}
	for i := range pairs {
		publish(fmt.Sprint("routed ", i), queue)
		publish(fmt.Sprint("unroutable ", i), queue+"_nowhere")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("outcomes missing")
	}
	for i := range pairs {
		assert.Equal(t, transport.Acked, got[fmt.Sprint("routed ", i)], "routed %d", i)
		assert.Equal(t, transport.Returned, got[fmt.Sprint("unroutable ", i)], "unroutable %d", i)
	}
	assert.Equal(t, pairs, brokertest.QueueDepth(t, queue))
}

// On a broker whose frame_max is under 64 KiB, a message whose properties
// do not fit one frame of it is not sent (TooLarge): the broker would close
// the connection over it. The bound is AMQP's (frame-max counts the
// frame's header and end octet): with every property set, an expiration of
// the most digits included, the largest let through makes a header frame
// of frame_max bytes, which the broker takes, and one byte more is kept
// back; the connection stays.
func TestPublisherKeepsPropertiesWithinFrameMax(t *testing.T) {
	brokertest.Need(t)
	const frameMax = 8192
	brokertest.SetFrameMax(t, frameMax)
	queue, conn, pub := publisherAndQueue(t, "test_frame_max_")
	uri, err := amqp.ParseURI(brokertest.URL())
	require.NoError(t, err)
	user := uri.Username // user_id must be the connection's

	publish := func(id string, header int) transport.Outcome {
		got := make(chan transport.Outcome, 1)
		require.NoError(t, pub.Publish(transport.Message{
			Key:      queue,
			Deadline: time.Now().Add(40 * 24 * time.Hour), // an expiration of 10 digits
			Publishing: amqp.Publishing{
				ContentType: "c", ContentEncoding: "e", CorrelationId: id, ReplyTo: "r", MessageId: "m",
				Type: "t", UserId: user, AppId: "a", Priority: 9, DeliveryMode: amqp.Persistent,
				Headers: amqp.Table{"h": strings.Repeat("h", header)},
			},
		}, func(o transport.Outcome) { got <- o }))
		select {
		case o := <-got:
			return o
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no outcome", id)
			return 0
		}
	}
	// The header frame's payload: class, weight, body size, flags (14);
	// eight short strings with their length bytes, and the expiration's
	// (10 digits); delivery mode, priority and timestamp (10); the table
	// (its length, and "h" as a key and a long string). Then the frame's
	// own 8 bytes.
	shortStrings := 8 + len("c"+"e"+"c1"+"r"+"m"+"t"+user+"a")
	largest := frameMax - 8 - 14 - shortStrings - 11 - 10 - (4 + 2 + 5)
	assert.Equal(t, transport.Acked, publish("c1", 10))
	assert.Equal(t, transport.TooLarge, publish("c2", 9000))
	assert.Equal(t, transport.TooLarge, publish("c3", largest+1))
	assert.Equal(t, transport.Acked, publish("c4", largest), "the largest let through: a frame of frame_max bytes")
	assert.Equal(t, transport.Acked, publish("c5", 10))
	assert.Zero(t, conn.Reconnects(), "the connection stayed up")
	assert.Equal(t, 3, brokertest.QueueDepth(t, queue))
}
