package amqprpc

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// After the broker closes every connection, the same Client and Server
// work again without user action.
func TestReconnectAfterConnectionsClosed(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2}, &sum))

	brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.CallContext(ctx, "Math.SumNumbers", []int{3, 4}, &sum))
	assert.Equal(t, 7, sum)
}

// A call in flight when connections drop completes once they are back.
func TestCallInFlightSurvivesConnectionLoss(t *testing.T) {
	ns := brokertest.Namespace(t)
	g := newGate()
	startServer(t, ns, newRPCServer(t, g))
	c := dial(t, ns)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reply string
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Gate.Wait", "x", &reply) }()
	<-g.entered
	brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")
	close(g.release)
	require.NoError(t, <-done)
	assert.Equal(t, "done x", reply)
}

// A client and a server each publish and consume on separate connections,
// so that a broker blocking publishers cannot stop deliveries.
func TestSeparateConnections(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)), WithConnectionName("sep server "+ns))
	dial(t, ns, WithConnectionName("sep client "+ns))
	require.Eventually(t, func() bool {
		out := brokertest.Rabbitmqctl(t, "list_connections", "-q", "client_properties")
		return strings.Count(out, "sep server "+ns) == 2 && strings.Count(out, "sep client "+ns) == 2
	}, 10*time.Second, 100*time.Millisecond, "two connections each")
}
