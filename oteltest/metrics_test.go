package oteltest

import (
	"context"
	"net/rpc"
	"slices"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// matches says whether set has every attribute of want; a want value ""
// means the attribute must be absent.
func matches(set attribute.Set, want map[string]string) bool {
	for k, v := range want {
		got, ok := set.Value(attribute.Key(k))
		if v == "" && ok || v != "" && got.AsString() != v {
			return false
		}
	}
	return true
}

// sum is the total of agg's int64 sum (or gauge) data points that match want.
func sum(t *testing.T, agg metricdata.Aggregation, want map[string]string) int64 {
	t.Helper()
	var dps []metricdata.DataPoint[int64]
	switch a := agg.(type) {
	case nil: // not recorded yet
	case metricdata.Sum[int64]:
		dps = a.DataPoints
	case metricdata.Gauge[int64]:
		dps = a.DataPoints
	default:
		require.Failf(t, "not an int64 sum or gauge", "%T", agg)
	}
	var n int64
	for _, dp := range dps {
		if matches(dp.Attributes, want) {
			n += dp.Value
		}
	}
	return n
}

// count is the number of values in agg's histogram data points that match
// want.
func count(t *testing.T, agg metricdata.Aggregation, want map[string]string) uint64 {
	t.Helper()
	var n uint64
	switch a := agg.(type) {
	case metricdata.Histogram[float64]:
		for _, dp := range a.DataPoints {
			if matches(dp.Attributes, want) {
				n += dp.Count
			}
		}
	case metricdata.Histogram[int64]:
		for _, dp := range a.DataPoints {
			if matches(dp.Attributes, want) {
				n += dp.Count
			}
		}
	default:
		require.Failf(t, "not a histogram", "%T", agg)
	}
	return n
}

// A scripted run (5 good calls, a handler error, a timeout, a call with no
// route, a forged reply) gives exactly these counts, on both
// sides, by method and outcome.
func TestMetricsAfterScriptedRun(t *testing.T) {
	ns := brokertest.Namespace(t)
	client, server := newSide(t), newSide(t)
	startServer(t, ns, server, false)
	c := dial(t, brokertest.URL(), ns, client, amqprpc.WithCallTimeout(300*time.Millisecond))

	for i := range 5 {
		var sum int
		require.NoError(t, c.Call("Arith.Add", [2]int{i, 1}, &sum))
	}
	require.ErrorAs(t, c.Call("Arith.Fail", 0, new(int)), new(rpc.ServerError))
	require.ErrorIs(t, c.Call("Arith.Sleep", 800, nil), context.DeadlineExceeded)
	require.ErrorIs(t, c.Call("Arith.Add", amqprpc.To("nobody", [2]int{1, 1}), new(int)), amqprpc.ErrNoRoute)
	// A forged reply, to no pending call, is dropped. (The late reply to
	// Sleep never comes: it expires with its request.)
	ch := brokertest.Channel(t)
	require.NoError(t, ch.Publish("rpc_"+ns+"_response", c.ID(), false, false,
		amqp.Publishing{CorrelationId: "forged.1", ContentType: "application/json", Body: []byte("1")}))
	require.Eventually(t, func() bool { return c.Dropped() == 1 }, 10*time.Second, 20*time.Millisecond)

	m := client.collect(t)
	dur := m["rpc.client.duration"]
	add := map[string]string{"rpc.system": "amqprpc", "rpc.service": "Arith", "rpc.method": "Add"}
	ok := map[string]string{"rpc.method": "Add", "error.type": ""}
	assert.Equal(t, uint64(5), count(t, dur, merge(add, ok)))
	assert.Equal(t, uint64(1), count(t, dur, map[string]string{"rpc.method": "Add", "error.type": "no_route"}))
	assert.Equal(t, uint64(1), count(t, dur, map[string]string{"rpc.method": "Fail", "error.type": "server_error"}))
	assert.Equal(t, uint64(1), count(t, dur, map[string]string{"rpc.method": "Sleep", "error.type": "timeout"}))
	assert.Equal(t, uint64(8), count(t, m["rpc.client.request.size"], nil), "every call sent a request")
	assert.Equal(t, uint64(6), count(t, m["rpc.client.response.size"], nil), "replies: 5 results and 1 error")
	assert.Equal(t, int64(0), sum(t, m["amqprpc.client.active_calls"], nil))
	assert.Equal(t, int64(1), sum(t, m["amqprpc.client.replies.dropped"], nil))
	assert.Equal(t, int64(0), sum(t, m["amqprpc.publisher.waiting"], nil))
	assert.Equal(t, int64(0), sum(t, m["amqprpc.connection.reconnects"], nil))

	var sm map[string]metricdata.Aggregation
	require.Eventually(t, func() bool {
		sm = server.collect(t)
		return sm["amqprpc.server.active_requests"] != nil && sum(t, sm["amqprpc.server.active_requests"], nil) == 0
	}, 5*time.Second, 20*time.Millisecond)
	sdur := sm["rpc.server.duration"]
	assert.Equal(t, uint64(5), count(t, sdur, ok))
	assert.Equal(t, uint64(1), count(t, sdur, map[string]string{"rpc.method": "Fail", "error.type": "handler_error"}))
	assert.Equal(t, uint64(1), count(t, sdur, map[string]string{"rpc.method": "Sleep", "error.type": ""}))
	assert.Equal(t, uint64(7), count(t, sm["rpc.server.request.size"], nil), "the no-route call never arrived")
	assert.Equal(t, int64(0), sum(t, sm["amqprpc.connection.reconnects"], nil))
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// Metrics that only move during trouble: a request every server ignores
// (event and counter per ignore), a request the broker delivers again
// after the server's connection was cut (counter), and a call made while
// the client's connection is down (waiting in the publisher, in flight).
func TestMetricsInTrouble(t *testing.T) {
	ns := brokertest.Namespace(t)
	client, server := newSide(t), newSide(t)
	proxy, viaProxy := brokertest.NewProxy(t)
	services := rpc.NewServer()
	hold := &Hold{entered: make(chan struct{}, 4), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold.release) }) }
	t.Cleanup(release) // before the server's Close, which waits for handlers
	require.NoError(t, services.Register(new(Arith)))
	require.NoError(t, services.Register(hold))
	s, err := amqprpc.NewServer(viaProxy, ns, services, server.opts...)
	require.NoError(t, err)
	brokertest.Serve(t, s.Serve, s.Close)
	c := dial(t, brokertest.URL(), ns, client)

	t.Run("ignored", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.ErrorIs(t, c.CallContext(ctx, "Arith.Decline", 1, new(int)), amqprpc.ErrNotTaken)
		assert.Equal(t, int64(10), sum(t, server.collect(t)["amqprpc.server.ignored"], map[string]string{"rpc.method": "Decline"}))
		var ignored int
		for _, sp := range server.spans.GetSpans() {
			if slices.Contains(eventNames(sp), "amqprpc.request.ignored") {
				ignored++
			}
		}
		assert.Equal(t, 10, ignored, "one server span per ignore says so")
	})

	t.Run("redelivered", func(t *testing.T) {
		call := c.Go("Hold.Wait", 1, new(int), nil)
		<-hold.entered
		proxy.Stop() // the server's connections go, with the request unacked
		require.NoError(t, proxy.Start())
		require.Eventually(t, func() bool {
			return sum(t, server.collect(t)["amqprpc.server.redeliveries"], nil) >= 1
		}, 30*time.Second, 50*time.Millisecond, "the broker delivered the request again")
		release()
		require.NoError(t, (<-call.Done).Error)
	})

	t.Run("waiting while disconnected", func(t *testing.T) {
		cproxy, cvia := brokertest.NewProxy(t)
		dc := dial(t, cvia, ns, client)
		require.NoError(t, dc.Call("Arith.Add", [2]int{1, 1}, new(int))) // connected
		cproxy.Stop()
		call := dc.Go("Arith.Add", [2]int{2, 2}, new(int), nil)
		id := map[string]string{"messaging.client.id": dc.ID()}
		require.Eventually(t, func() bool {
			m := client.collect(t)
			return sum(t, m["amqprpc.publisher.waiting"], id) >= 1 && sum(t, m["amqprpc.client.active_calls"], nil) >= 1
		}, 30*time.Second, 50*time.Millisecond, "the call waits in the publisher, in flight")
		require.NoError(t, cproxy.Start())
		require.NoError(t, (<-call.Done).Error)
		m := client.collect(t)
		assert.Equal(t, int64(0), sum(t, m["amqprpc.publisher.waiting"], id))
		assert.Equal(t, int64(0), sum(t, m["amqprpc.client.active_calls"], nil))
		assert.GreaterOrEqual(t, sum(t, m["amqprpc.connection.reconnects"], id), int64(1))
	})
}

// Hold is a service whose calls wait until the test releases them.
type Hold struct {
	entered chan struct{}
	release chan struct{}
}

func (h *Hold) Wait(_ int, reply *int) error {
	h.entered <- struct{}{}
	<-h.release
	*reply = 1
	return nil
}
