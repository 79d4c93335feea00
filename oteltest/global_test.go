package oteltest

import (
	"context"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// Given no providers, a Client and a Server use the global ones, also
// when the application sets them only after making the Client and the
// Server. Until it does, a call carries the caller's span context through
// unchanged, as the global no-op tracer does; from then on it is traced.
// (It sets the process's global providers: Example, which runs after the
// tests, sets its own.)
func TestGlobalProviderSetLater(t *testing.T) {
	require.Equal(t, "go.opentelemetry.io/otel/internal/global", reflect.TypeOf(otel.GetTracerProvider()).Elem().PkgPath(),
		"the global tracer provider must not be set before this test")
	otel.SetTextMapPropagator(propagation.TraceContext{})
	ns := brokertest.Namespace(t)
	startServer(t, ns, &side{}, false)
	c := dial(t, brokertest.URL(), ns, &side{})

	caller := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		SpanID:     trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithSpanContext(context.Background(), caller)
	var id string
	require.NoError(t, c.CallContext(ctx, "Arith.SpanID", 0, &id))
	assert.Equal(t, caller.SpanID().String(), id, "no provider yet: the handler sees the caller's span context")

	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	otel.SetTracerProvider(tp)
	require.NoError(t, c.CallContext(ctx, "Arith.SpanID", 0, &id))
	got := map[trace.SpanKind]tracetest.SpanStub{}
	for _, sp := range spans.GetSpans() {
		require.Equal(t, "Arith/SpanID", sp.Name)
		got[sp.SpanKind] = sp
	}
	require.Len(t, got, 2, "a client span and a server span")
	client, server := got[trace.SpanKindClient], got[trace.SpanKindServer]
	assert.Equal(t, caller.TraceID(), client.SpanContext.TraceID(), "in the caller's trace")
	assert.Equal(t, caller.SpanID(), client.Parent.SpanID(), "the client span is the caller's child")
	requireChild(t, client, server, "SpanID")
	assert.Equal(t, server.SpanContext.SpanID().String(), id, "the handler sees the server span")
}
