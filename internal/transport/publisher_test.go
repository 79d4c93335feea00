package transport_test

import (
	"fmt"
	"log/slog"
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

// Of mandatory messages in flight at once that share a message id (clients
// other than amqprpc may reuse ids), only the ones no queue takes come back
// Returned: returns are matched by reply_to, correlation_id and message_id,
// not by message id alone.
func TestPublisherMatchesReturnsToTheirMessages(t *testing.T) {
	brokertest.Need(t)
	queue := "test_returns_" + brokertest.Namespace(t)
	ch := brokertest.Channel(t)
	_, err := ch.QueueDeclare(queue, true, false, false, false, nil) // durable: RabbitMQ 4.3 may deny transient non-exclusive queues
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false) })

	conn, err := transport.Open(brokertest.URL(), transport.Config{}, slog.Default())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })
	pub, err := transport.NewPublisher(conn, slog.Default(), nil, nil)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, pub.Close()) })

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
