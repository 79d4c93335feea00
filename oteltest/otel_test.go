// Package oteltest proves amqprpc's OpenTelemetry traces and metrics
// against a real broker with the OpenTelemetry SDK's in-memory exporters.
// It is a module of its own so that the SDK never enters the module graph
// of amqprpc's users.
package oteltest

import (
	"context"
	"errors"
	"log/slog"
	"net/rpc"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/fanout"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// Arith is the service under test.
type Arith struct{}

func (*Arith) Add(args [2]int, sum *int) error {
	*sum = args[0] + args[1]
	return nil
}

func (*Arith) Fail(_ int, _ *int) error { return errors.New("no such luck") }

// Decline ignores every call (amqprpc.ErrIgnoreRequest).
func (*Arith) Decline(_ int, _ *int) error { return amqprpc.ErrIgnoreRequest }

func (*Arith) Sleep(ms int, _ *int) error {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	return nil
}

// SpanID is context-aware: it answers the span id its context carries.
func (*Arith) SpanID(ctx context.Context, _ int, id *string) error {
	*id = trace.SpanFromContext(ctx).SpanContext().SpanID().String()
	return nil
}

// side is one process's telemetry: a tracer provider and a meter provider
// with in-memory exporters, and the options that use them.
type side struct {
	spans   *tracetest.InMemoryExporter
	metrics *sdkmetric.ManualReader
	opts    []amqprpc.Option
}

func newSide(t *testing.T) *side {
	s := &side{spans: tracetest.NewInMemoryExporter(), metrics: sdkmetric.NewManualReader()}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.metrics))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	s.opts = []amqprpc.Option{
		amqprpc.WithTracerProvider(tp),
		amqprpc.WithMeterProvider(mp),
		amqprpc.WithPropagator(propagation.TraceContext{}),
	}
	return s
}

// span waits for the one span of kind named name that match says is the
// one, and returns it.
func (s *side) span(t *testing.T, kind trace.SpanKind, name string, match func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	require.Eventually(t, func() bool {
		found = found[:0]
		for _, sp := range s.spans.GetSpans() {
			if sp.SpanKind == kind && sp.Name == name && (match == nil || match(sp)) {
				found = append(found, sp)
			}
		}
		return len(found) > 0
	}, 10*time.Second, 10*time.Millisecond, "no %v span %q", kind, name)
	require.Len(t, found, 1, "%v spans %q", kind, name)
	return found[0]
}

// collect returns the metrics recorded so far, by name.
func (s *side) collect(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, s.metrics.Collect(context.Background(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		require.Equal(t, amqprpc.ScopeName, sm.Scope.Name)
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

func attrs(sp tracetest.SpanStub) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range sp.Attributes {
		m[kv.Key] = kv.Value
	}
	return m
}

func eventNames(sp tracetest.SpanStub) []string {
	var names []string
	for _, e := range sp.Events {
		names = append(names, e.Name)
	}
	return names
}

// startServer serves Arith in ns (fanout when fan), with server's
// telemetry, until the test ends.
func startServer(t *testing.T, ns string, server *side, fan bool) *amqprpc.Server {
	t.Helper()
	services := rpc.NewServer()
	if fan {
		require.NoError(t, services.Register(new(Arith)))
		s, err := fanout.NewServer(brokertest.URL(), ns, services, server.opts...)
		require.NoError(t, err)
		brokertest.Serve(t, s.Serve, s.Close)
		return nil
	}
	s, err := amqprpc.NewServer(brokertest.URL(), ns, services, server.opts...)
	require.NoError(t, err)
	require.NoError(t, s.Register(new(Arith)))
	brokertest.Serve(t, s.Serve, s.Close)
	return s
}

func dial(t *testing.T, url, ns string, client *side, opts ...amqprpc.Option) *amqprpc.Client {
	t.Helper()
	c, err := amqprpc.Dial(url, ns, append(slices.Clone(client.opts), opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// requireChild checks that server is the child of client in one trace,
// and that both carry the RPC and messaging attributes of the call.
func requireChild(t *testing.T, client, server tracetest.SpanStub, method string) {
	t.Helper()
	require.Equal(t, client.SpanContext.TraceID(), server.SpanContext.TraceID(), "one trace")
	require.Equal(t, client.SpanContext.SpanID(), server.Parent.SpanID(), "the server span is the client span's child")
	assert.True(t, server.Parent.IsRemote())
	ca, sa := attrs(client), attrs(server)
	for _, a := range []map[attribute.Key]attribute.Value{ca, sa} {
		assert.Equal(t, "amqprpc", a["rpc.system"].AsString())
		assert.Equal(t, "Arith", a["rpc.service"].AsString())
		assert.Equal(t, method, a["rpc.method"].AsString())
		assert.Equal(t, "rabbitmq", a["messaging.system"].AsString())
		assert.Regexp(t, `^rpc_test_[0-9a-f]+_request$`, a["messaging.destination.name"].AsString())
		assert.NotEmpty(t, a["messaging.message.id"].AsString())
		assert.Positive(t, a["messaging.message.body.size"].AsInt64())
	}
	assert.Equal(t, "send", ca["messaging.operation.type"].AsString())
	assert.Equal(t, "process", sa["messaging.operation.type"].AsString())
	assert.Equal(t, ca["messaging.message.id"], sa["messaging.message.id"], "the same message")
	assert.NotEmpty(t, ca["messaging.message.conversation_id"].AsString())
	assert.Equal(t, ca["messaging.message.conversation_id"], sa["messaging.message.conversation_id"])
	assert.Equal(t, ca["messaging.rabbitmq.destination.routing_key"], sa["messaging.rabbitmq.destination.routing_key"])
	assert.NotEmpty(t, ca["messaging.client.id"].AsString())
	// (The broker's confirm may come after the reply, when the span has
	// ended: TestClientEvents checks the confirmed event where it cannot.)
	assert.Equal(t, codes.Unset, client.Status.Code)
	assert.Equal(t, codes.Unset, server.Status.Code)
}

// Call, Go, CallContext and ReceiveFromQueue each make one trace that
// spans client and server: the server span is the child of the client
// span, across the broker, and a context-aware handler sees its span.
func TestTraceSpansClientAndServer(t *testing.T) {
	ns := brokertest.Namespace(t)
	client, server := newSide(t), newSide(t)
	s := startServer(t, ns, server, false)
	c := dial(t, brokertest.URL(), ns, client)
	tracer := sdktrace.NewTracerProvider().Tracer("test")

	byID := func(id string) func(tracetest.SpanStub) bool {
		return func(sp tracetest.SpanStub) bool { return attrs(sp)["messaging.message.id"].AsString() == id }
	}
	msgID := func(sp tracetest.SpanStub) string { return attrs(sp)["messaging.message.id"].AsString() }
	// callSpans returns the client span that parent (or, for nil, no
	// span) is the parent of, and the server span of the same message.
	callSpans := func(t *testing.T, method string, parent trace.SpanContext) (tracetest.SpanStub, tracetest.SpanStub) {
		cs := client.span(t, trace.SpanKindClient, "Arith/"+method, func(sp tracetest.SpanStub) bool {
			return sp.Parent.SpanID() == parent.SpanID()
		})
		ss := server.span(t, trace.SpanKindServer, "Arith/"+method, byID(msgID(cs)))
		requireChild(t, cs, ss, method)
		return cs, ss
	}

	t.Run("Call", func(t *testing.T) {
		client.spans.Reset()
		var sum int
		require.NoError(t, c.Call("Arith.Add", [2]int{1, 2}, &sum))
		require.Equal(t, 3, sum)
		cs, _ := callSpans(t, "Add", trace.SpanContext{})
		assert.False(t, cs.Parent.IsValid(), "a root span: Call has no context")
	})
	t.Run("Go", func(t *testing.T) {
		client.spans.Reset()
		var sum int
		call := <-c.Go("Arith.Add", [2]int{3, 4}, &sum, nil).Done
		require.NoError(t, call.Error)
		callSpans(t, "Add", trace.SpanContext{})
	})
	t.Run("CallContext", func(t *testing.T) {
		client.spans.Reset()
		ctx, parent := tracer.Start(context.Background(), "request")
		var id string
		require.NoError(t, c.CallContext(ctx, "Arith.SpanID", 0, &id))
		parent.End()
		cs, ss := callSpans(t, "SpanID", parent.SpanContext())
		assert.Equal(t, parent.SpanContext().TraceID(), cs.SpanContext.TraceID(), "the caller's trace")
		assert.Equal(t, ss.SpanContext.SpanID().String(), id, "the handler's context holds the server span")
	})
	t.Run("ReceiveFromQueue", func(t *testing.T) {
		client.spans.Reset()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		require.NoError(t, c.CreateRequestQueue(ctx, "alice"))
		t.Cleanup(func() { _ = c.DeleteRequestQueue(context.Background(), "alice") })
		var sum int
		call := c.Go("Arith.Add", amqprpc.To("alice", [2]int{5, 6}), &sum, nil)
		n, err := s.ReceiveFromQueue(ctx, "alice", 1)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.NoError(t, (<-call.Done).Error)
		require.Equal(t, 11, sum)
		cs, _ := callSpans(t, "Add", trace.SpanContext{})
		assert.Equal(t, "alice", attrs(cs)["messaging.rabbitmq.destination.routing_key"].AsString())
	})
}

// CallAll is one client span with an event per reply, and each fanout
// server's span is its child.
func TestTraceCallAll(t *testing.T) {
	ns := brokertest.Namespace(t)
	client, server := newSide(t), newSide(t)
	for range 3 {
		startServer(t, ns, server, true)
	}
	c, err := fanout.Dial(brokertest.URL(), ns, client.opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results, err := c.CallAll(ctx, "Arith.Add", [2]int{1, 1}, func() any { return new(int) }, 3)
	require.NoError(t, err)
	require.Len(t, results, 3)

	cs := client.span(t, trace.SpanKindClient, "Arith/Add", nil)
	var replies int
	for _, e := range eventNames(cs) {
		if e == "amqprpc.reply" {
			replies++
		}
	}
	assert.Equal(t, 3, replies, "one event per reply")
	require.Eventually(t, func() bool { return len(server.spans.GetSpans()) == 3 }, 10*time.Second, 10*time.Millisecond)
	for _, ss := range server.spans.GetSpans() {
		requireChild(t, cs, ss, "Add")
	}
}

// A timeout, a no-route, a server error and a call retried after its
// connection was lost are each visible on the client span, as an event
// and as its status and error.type.
func TestClientEvents(t *testing.T) {
	ns := brokertest.Namespace(t)
	client, server := newSide(t), newSide(t)
	startServer(t, ns, server, false)
	c := dial(t, brokertest.URL(), ns, client, amqprpc.WithCallTimeout(300*time.Millisecond))

	check := func(t *testing.T, method, errorType string, events ...string) tracetest.SpanStub {
		t.Helper()
		sp := client.span(t, trace.SpanKindClient, "Arith/"+method, nil)
		for _, e := range events {
			assert.Contains(t, eventNames(sp), e)
		}
		assert.Equal(t, codes.Error, sp.Status.Code)
		assert.Equal(t, errorType, attrs(sp)["error.type"].AsString())
		return sp
	}
	t.Run("timeout", func(t *testing.T) {
		client.spans.Reset()
		err := c.Call("Arith.Sleep", 1000, nil)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		// The confirm comes long before the timeout.
		check(t, "Sleep", "timeout", "amqprpc.publish.confirmed", "amqprpc.call.timed_out")
	})
	t.Run("no route", func(t *testing.T) {
		client.spans.Reset()
		err := c.Call("Arith.Add", amqprpc.To("nobody", [2]int{1, 1}), new(int))
		require.ErrorIs(t, err, amqprpc.ErrNoRoute)
		check(t, "Add", "no_route", "amqprpc.publish.returned")
	})
	t.Run("server error", func(t *testing.T) {
		client.spans.Reset()
		server.spans.Reset()
		err := c.Call("Arith.Fail", 1, new(int))
		require.ErrorAs(t, err, new(rpc.ServerError))
		sp := check(t, "Fail", "server_error")
		assert.Equal(t, "no such luck", sp.Status.Description)
		assert.Contains(t, eventNames(sp), "exception", "the error is recorded")
		ss := server.span(t, trace.SpanKindServer, "Arith/Fail", nil)
		assert.Equal(t, codes.Error, ss.Status.Code)
		assert.Equal(t, "handler_error", attrs(ss)["error.type"].AsString())
	})
	t.Run("reconnect", func(t *testing.T) {
		proxy, viaProxy := brokertest.NewProxy(t)
		logs := new(brokertest.Buffer)
		rc := dial(t, viaProxy, ns, client, amqprpc.WithHeartbeat(time.Second),
			amqprpc.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
		var total int
		require.NoError(t, rc.Call("Arith.Add", [2]int{1, 1}, &total)) // connected
		client.spans.Reset()

		// The request goes into a dead link: never confirmed, it is sent
		// again once the heartbeat has noticed and the client reconnected.
		proxy.Blackhole(true)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- rc.CallContext(ctx, "Arith.Add", [2]int{40, 2}, &total) }()
		require.Eventually(t, func() bool { return strings.Contains(logs.String(), "connection lost") }, 30*time.Second, 50*time.Millisecond,
			"the heartbeat notices the dead link")
		proxy.Blackhole(false)
		require.NoError(t, <-done)
		require.Equal(t, 42, total)
		sp := client.span(t, trace.SpanKindClient, "Arith/Add", nil)
		assert.Equal(t, codes.Unset, sp.Status.Code)
		var retried []string
		for _, e := range sp.Events {
			if e.Name == "amqprpc.publish.retried" {
				for _, kv := range e.Attributes {
					if kv.Key == "amqprpc.retry.reason" {
						retried = append(retried, kv.Value.AsString())
					}
				}
			}
		}
		assert.Contains(t, retried, "channel_lost", "events: %v", eventNames(sp))
		reconnects := sum(t, client.collect(t)["amqprpc.connection.reconnects"], map[string]string{"messaging.client.id": rc.ID()})
		assert.GreaterOrEqual(t, reconnects, int64(1), "the client's connections reconnected")
	})
}

// rawRequest publishes msg to ns's request exchange, with the trace
// context of ctx in its headers, as a foreign client would.
func rawRequest(t *testing.T, ch *amqp.Channel, ns string, ctx context.Context, msg amqp.Publishing) {
	t.Helper()
	msg.Headers = amqp.Table{}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(ctx, carrier)
	for k, v := range carrier {
		msg.Headers[k] = v
	}
	require.NoError(t, ch.Publish("rpc_"+ns+"_request", "", false, false, msg))
}

// A duplicate request is answered from the reply cache without running
// the handler: its server span, a child of the caller's, says so, and the
// duplicates counter counts it.
func TestServerDuplicateEvent(t *testing.T) {
	ns := brokertest.Namespace(t)
	server := newSide(t)
	startServer(t, ns, server, false)
	ch, replies := brokertest.Replies(t, ns, "rawpeer")

	ctx, parent := sdktrace.NewTracerProvider().Tracer("test").Start(context.Background(), "foreign caller")
	msg := amqp.Publishing{Type: "Arith.Add", ReplyTo: "rawpeer", CorrelationId: "dup", MessageId: "dup",
		ContentType: "application/json", Body: []byte(`[20,22]`)}
	for range 2 {
		rawRequest(t, ch, ns, ctx, msg)
		select {
		case d := <-replies:
			require.Equal(t, "42", string(d.Body))
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
		}
	}
	var ran, dup []tracetest.SpanStub
	require.Eventually(t, func() bool {
		ran, dup = ran[:0], dup[:0]
		for _, sp := range server.spans.GetSpans() {
			if slices.Contains(eventNames(sp), "amqprpc.request.duplicate") {
				dup = append(dup, sp)
			} else {
				ran = append(ran, sp)
			}
		}
		return len(ran)+len(dup) == 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Len(t, dup, 1, "one span says duplicate")
	for _, sp := range append(ran, dup...) {
		assert.Equal(t, parent.SpanContext().TraceID(), sp.SpanContext.TraceID())
		assert.Equal(t, parent.SpanContext().SpanID(), sp.Parent.SpanID())
	}
	m := server.collect(t)
	assert.Equal(t, int64(1), sum(t, m["amqprpc.server.duplicates"], nil))
	assert.Equal(t, uint64(1), count(t, m["rpc.server.duration"], nil), "the handler ran once")
}
