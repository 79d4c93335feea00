package amqprpc

import (
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The broker objects are those the seed documents, with the arguments we
// promise: re-declaring them with exactly those arguments succeeds, which the
// broker only allows when they match.
func TestTopology(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithReplyQueueExpiry(90*time.Second))
	ch := brokertest.Channel(t)

	for _, ex := range []string{"rpc_" + ns + "_request", "rpc_" + ns + "_response"} {
		require.NoError(t, ch.ExchangeDeclare(ex, "direct", true, false, false, false, nil), ex)
	}
	_, err := ch.QueueDeclare("rpc_"+ns+"_request", true, false, false, false, nil)
	require.NoError(t, err)
	replyQueue := "rpc_" + ns + "_" + c.ID() + "_response"
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(replyQueue, false, false, false) })
	_, err = ch.QueueDeclare(replyQueue, true, false, false, false, amqp.Table{"x-expires": int64(90_000)})
	require.NoError(t, err, "the reply queue is durable and expires")

	// The reply queue is bound with the client id: a message routed by it
	// reaches the client (which drops it, as it matches no call).
	require.NoError(t, ch.Publish("rpc_"+ns+"_response", c.ID(), true, false, amqp.Publishing{CorrelationId: "stray"}))
	require.Eventually(t, func() bool { return c.Dropped() == 1 }, 5*time.Second, 5*time.Millisecond)

	// The request queue is bound with key "".
	require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", true, false, amqp.Publishing{}))
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 1 }, 5*time.Second, 5*time.Millisecond)
}

func TestBadNamespace(t *testing.T) {
	_, err := Dial("amqp://localhost:1/", "")
	assert.ErrorContains(t, err, "empty namespace")
	_, err = NewServer("amqp://localhost:1/", "", nil)
	assert.ErrorContains(t, err, "empty namespace")
}

func TestDialErrorHidesPassword(t *testing.T) {
	_, err := Dial("amqp://user:s3cret@127.0.0.1:1/", "ns")
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "s3cret")
}
