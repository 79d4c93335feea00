package amqprpc

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// queueInfo is the type and arguments of queue, as rabbitmqctl lists them.
func queueInfo(t *testing.T, queue string) (kind, args string) {
	t.Helper()
	for _, line := range strings.Split(brokertest.Rabbitmqctl(t, "list_queues", "-q", "--no-table-headers", "name", "type", "arguments"), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == queue {
			return f[1], strings.Join(f[2:], " ")
		}
	}
	t.Fatalf("queue %s not listed", queue)
	return "", ""
}

// Request queues that operators declared first, here as quorum queues,
// are used as they are: declaring them again with other arguments would
// fail with 406 PRECONDITION_FAILED (inequivalent arg x-queue-type).
func TestAdoptsRequestQueuesDeclaredFirst(t *testing.T) {
	ns := brokertest.Namespace(t)
	ch := brokertest.Channel(t)
	quorum := amqp.Table{"x-queue-type": "quorum"}
	for _, q := range []string{"rpc_" + ns + "_request", "rpc_" + ns + "_queue_alice"} {
		_, err := ch.QueueDeclare(q, true, false, false, false, quorum)
		require.NoError(t, err)
		t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(q, false, false, false) })
	}
	s := startServer(t, ns, newRPCServer(t, new(Echo)))
	c := dial(t, ns)
	var r string
	require.NoError(t, c.Call("Echo.Say", "main", &r))
	assert.Equal(t, "main", r)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.CreateRequestQueue(ctx, "alice", WithQueueExpiry(time.Hour)))
	done := make(chan error, 1)
	go func() { _, err := s.ReceiveFromQueue(ctx, "alice", 1); done <- err }()
	require.NoError(t, c.CallContext(ctx, "Echo.Say", To("alice", "extra"), &r))
	assert.Equal(t, "extra", r)
	require.NoError(t, <-done)
	kind, _ := queueInfo(t, "rpc_"+ns+"_queue_alice")
	assert.Equal(t, "quorum", kind)
}

// WithQueueType(QuorumQueue) makes the request queues quorum queues with
// a delivery limit.
func TestQuorumRequestQueues(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Echo)), WithQueueType(QuorumQueue))
	c := dial(t, ns, WithQueueType(QuorumQueue), WithDeliveryLimit(5))
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete("rpc_"+ns+"_request", false, false, false) })
	var r string
	require.NoError(t, c.Call("Echo.Say", "q", &r))
	kind, args := queueInfo(t, "rpc_"+ns+"_request")
	assert.Equal(t, "quorum", kind)
	assert.Contains(t, args, "x-delivery-limit", "the server declared it, with the default limit")
	assert.Contains(t, args, "20")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, c.CreateRequestQueue(ctx, "bob", WithQueueExpiry(time.Hour)))
	t.Cleanup(func() { _ = c.DeleteRequestQueue(context.Background(), "bob") })
	kind, args = queueInfo(t, "rpc_"+ns+"_queue_bob")
	assert.Equal(t, "quorum", kind)
	assert.Contains(t, args, "x-expires")
	assert.Contains(t, args, "x-delivery-limit")

	_, err := Dial(brokertest.URL(), ns, WithQueueType("lazy"))
	require.Error(t, err)
}

// A request that no server ever settles (here a consumer that rejects it
// with requeue, as a crashing server's connection would return it) ends
// after the delivery limit instead of going round for ever.
func TestDeliveryLimitEndsAPoisonRequest(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithQueueType(QuorumQueue), WithDeliveryLimit(2))
	queue := "rpc_" + ns + "_request"
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false) })
	ch := brokertest.Channel(t)
	require.NoError(t, ch.Qos(1, 0, false))
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	var n atomic.Int32
	go func() {
		for d := range deliveries {
			n.Add(1)
			_ = d.Reject(true)
		}
	}()
	call := c.Go("Echo.Say", "poison", new(string), nil)
	require.Eventually(t, func() bool { return brokertest.Messages(t, queue) == 0 && n.Load() > 0 }, 10*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, 0, brokertest.Messages(t, queue))
	assert.LessOrEqual(t, n.Load(), int32(3), "delivered at most limit+1 times")
	t.Logf("delivered %d times", n.Load())
	select {
	case <-call.Done:
		t.Fatalf("the call ended: %v", call.Error)
	default: // it ends at its deadline; the request is gone
	}
}
