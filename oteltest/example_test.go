package oteltest

import (
	"context"
	"fmt"
	"log"
	"net/rpc"
	"os"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// An application that set up OpenTelemetry gets amqprpc's spans and
// metrics with no further code: amqprpc uses the global providers. Here
// they print to standard error (the stdout exporters); a real one sends
// them to a collector (OTLP) or serves them to Prometheus.
func Example() {
	ctx := context.Background()
	// Look in what it prints (on standard error) for two spans named
	// Arith/Add: the server's (SpanKind 2) has as Parent.SpanID the
	// client's (SpanKind 3) SpanID, in one TraceID: one trace across the
	// broker.
	spans, err := stdouttrace.New(stdouttrace.WithWriter(os.Stderr), stdouttrace.WithPrettyPrint())
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(spans))
	defer tp.Shutdown(ctx) // exports what is left
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{}) // W3C traceparent in the AMQP headers
	metrics, err := stdoutmetric.New(stdoutmetric.WithWriter(os.Stderr))
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(metrics)))
	defer mp.Shutdown(ctx) // exports the metrics a last time
	otel.SetMeterProvider(mp)

	services := rpc.NewServer()
	if err := services.Register(new(Arith)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer(brokertest.URL(), "example_otel_stdout", services)
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	go server.Serve(ctx)

	client, err := amqprpc.Dial(brokertest.URL(), "example_otel_stdout")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	var sum int
	if err := client.Call("Arith.Add", [2]int{1, 2}, &sum); err != nil {
		log.Fatal(err)
	}
	fmt.Println(sum)
	// Output:
	// 3
}
