package amqprpc

import (
	"context"
	"errors"
	"net/rpc"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// Telemetry follows the OpenTelemetry semantic conventions v1.37.0
// (https://opentelemetry.io/docs/specs/semconv/rpc/ and
// .../messaging/rabbitmq/): spans are named "Service/Method", with the
// rpc.* attributes (rpc.system is "amqprpc") and the messaging.* ones of
// RabbitMQ; metrics are rpc.client.duration, rpc.server.duration (ms) and
// the request and response sizes (By), plus amqprpc.* ones for what the
// conventions have no name for. See README's "Observability".

// ScopeName is the instrumentation scope of amqprpc's tracer and meter.
const ScopeName = "github.com/amqprpc/amqprpc"

// rpcSystem is the rpc.system attribute's value: the wire protocol of
// PROTOCOL.md.
var rpcSystem = semconv.RPCSystemKey.String("amqprpc")

// Span events: what happened to a call or a request besides its outcome.
const (
	eventConfirmed  = "amqprpc.publish.confirmed" // the broker took the request (publisher confirm)
	eventReturned   = "amqprpc.publish.returned"  // no queue took it (mandatory)
	eventNacked     = "amqprpc.publish.nacked"    // the broker refused it
	eventRetried    = "amqprpc.publish.retried"   // sent again; attribute amqprpc.retry.reason
	eventTimedOut   = "amqprpc.call.timed_out"
	eventReply      = "amqprpc.reply" // one per reply to CallAll
	eventDuplicate  = "amqprpc.request.duplicate"
	eventIgnored    = "amqprpc.request.ignored"
	eventExpired    = "amqprpc.request.expired"
	eventRedelivery = "amqprpc.request.redelivered"
	eventRefused    = "amqprpc.request.refused"
)

// Why a request was sent again (attribute amqprpc.retry.reason).
var (
	retryChannelLost      = attribute.String("amqprpc.retry.reason", "channel_lost")
	retryReplyQueueLost   = attribute.String("amqprpc.retry.reason", "reply_queue_lost")
	retryQueueUnavailable = attribute.String("amqprpc.retry.reason", "queue_unavailable")
)

// WithTracerProvider sets where a Client's or Server's spans go. Default:
// the global provider (otel.GetTracerProvider) at the time the Client or
// Server is made, which forwards to whatever provider the application sets
// later. While none is set, no span is started at all (the caller's span
// context still travels to the server): pass
// WithTracerProvider(otel.GetTracerProvider()) to have spans started
// through the unset global anyway, as OpenTelemetry's eBPF
// auto-instrumentation (go.opentelemetry.io/auto) needs. A nil tp is an
// error.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) error {
		if tp == nil {
			return errors.New("amqprpc: WithTracerProvider(nil)")
		}
		o.tracerProvider = tp
		return nil
	}
}

// WithPropagator sets how a call's span context travels in the request's
// AMQP headers (W3C traceparent and tracestate, B3, ...). Default: the
// global propagator (otel.GetTextMapPropagator), which carries nothing
// until the application sets one. A nil p is an error.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(o *options) error {
		if p == nil {
			return errors.New("amqprpc: WithPropagator(nil)")
		}
		o.propagator = p
		return nil
	}
}

// WithMeterProvider sets where a Client's or Server's metrics go. Default:
// the global provider (otel.GetMeterProvider), which records nothing until
// the application sets one. A nil mp is an error.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(o *options) error {
		if mp == nil {
			return errors.New("amqprpc: WithMeterProvider(nil)")
		}
		o.meterProvider = mp
		return nil
	}
}

// telemetry is one side's (a Client's or a Server's) tracer, propagator
// and instruments.
type telemetry struct {
	tracer trace.Tracer
	// unset is the global tracer provider while no application has set
	// one (see startSpan); nil when the Client or Server was given one, or
	// the global was set before it was made.
	unset trace.TracerProvider
	prop  propagation.TextMapPropagator
	meter metric.Meter
	kind  trace.SpanKind // of the spans of calls or requests
	start []trace.SpanStartOption

	duration     metric.Float64Histogram   // rpc.{client,server}.duration
	requestSize  metric.Int64Histogram     // rpc.{client,server}.request.size
	responseSize metric.Int64Histogram     // rpc.{client,server}.response.size
	active       metric.Int64UpDownCounter // calls in flight, or requests being handled
	activeAdd    []metric.AddOption        // its attributes

	// The server's.
	duplicates, redeliveries, ignored, refused metric.Int64Counter

	mu sync.RWMutex
	// protects methods and every methodTel's outcomes
	methods map[string]*methodTel // up to maxMethods
	other   *methodTel            // "_OTHER": the rest
}

// methodTel is what a side keeps of one method: its span name, and the
// metric options of each outcome, built once.
type methodTel struct {
	name     string                 // of its spans: "Service/Method"
	attrs    []attribute.KeyValue   // rpc.system, rpc.service, rpc.method
	ok       *outcomeTel            // success: no error.type
	outcomes map[string]*outcomeTel // failures, by error.type
}

// outcomeTel is the attributes of a method's metrics for one outcome, as
// the options Record and Add take (prebuilt: no allocation per call).
type outcomeTel struct {
	record []metric.RecordOption
	add    []metric.AddOption
}

// maxMethods bounds the distinct methods a side keeps: a server keeps only
// those it answered (not unknown or malformed ones, whose names come from
// the wire), and beyond the bound records methods as "_OTHER".
const maxMethods = 512

func newTelemetry(o *options, server bool) *telemetry {
	tp, mp, prop := o.tracerProvider, o.meterProvider, o.propagator
	var unset trace.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
		if t := reflect.TypeOf(tp); t.Kind() == reflect.Pointer && t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" {
			unset = tp // the global's stand-in, which forwards to what is set later
		}
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	t := &telemetry{
		tracer:  tp.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL)),
		unset:   unset,
		prop:    prop,
		meter:   mp.Meter(ScopeName, metric.WithSchemaURL(semconv.SchemaURL)),
		kind:    trace.SpanKindClient,
		methods: make(map[string]*methodTel),
		other:   newMethodTel("_OTHER"),

		activeAdd: []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(rpcSystem))},
	}
	side, active, activeDesc, activeUnit := "client", "amqprpc.client.active_calls", "Calls sent and not yet completed.", "{call}"
	if server {
		t.kind = trace.SpanKindServer
		side, active, activeDesc, activeUnit = "server", "amqprpc.server.active_requests", "Requests being handled.", "{request}"
	}
	t.start = []trace.SpanStartOption{trace.WithSpanKind(t.kind)}
	var errs []error
	hist := func(name, desc string) metric.Int64Histogram {
		h, err := t.meter.Int64Histogram(name, metric.WithUnit("By"), metric.WithDescription(desc))
		errs = append(errs, err)
		return h
	}
	counter := func(name, desc string) metric.Int64Counter {
		c, err := t.meter.Int64Counter(name, metric.WithUnit("{request}"), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	var err error
	t.duration, err = t.meter.Float64Histogram("rpc."+side+".duration", metric.WithUnit("ms"),
		metric.WithDescription("Duration of RPCs, from the call to its outcome (client) or from taking the request to its reply (server)."))
	errs = append(errs, err)
	t.requestSize = hist("rpc."+side+".request.size", "Size of RPC request bodies.")
	t.responseSize = hist("rpc."+side+".response.size", "Size of RPC response bodies.")
	t.active, err = t.meter.Int64UpDownCounter(active, metric.WithUnit(activeUnit), metric.WithDescription(activeDesc))
	errs = append(errs, err)
	if server {
		t.duplicates = counter("amqprpc.server.duplicates", "Duplicate requests suppressed: answered from the reply cache, or acked.")
		t.redeliveries = counter("amqprpc.server.redeliveries", "Requests the broker delivered again (after a lost connection or a requeue).")
		t.ignored = counter("amqprpc.server.ignored", "Requests a handler ignored (ErrIgnoreRequest).")
		t.refused = counter("amqprpc.server.refused", "Malformed requests refused without running a handler.")
	}
	if err := errors.Join(errs...); err != nil {
		otel.Handle(err)
	}
	return t
}

// observe registers the callbacks of a Client's or Server's observable
// metrics, each observed with messaging.client.id id (the client id, or a
// server's random one: observations of several Clients or Servers of one
// meter must not share attributes); the returned func unregisters them
// (at Close).
func (t *telemetry) observe(id string, waiting func() int, reconnects func() uint64, dropped func() uint64) func() error {
	var errs []error
	gauge, err := t.meter.Int64ObservableGauge("amqprpc.publisher.waiting", metric.WithUnit("{message}"),
		metric.WithDescription("Messages waiting in the publisher to be sent, such as while the connection is down."))
	errs = append(errs, err)
	recon, err := t.meter.Int64ObservableCounter("amqprpc.connection.reconnects", metric.WithUnit("{reconnect}"),
		metric.WithDescription("Times a connection was lost and opened again."))
	errs = append(errs, err)
	insts := []metric.Observable{gauge, recon}
	var drop metric.Int64ObservableCounter
	if dropped != nil {
		drop, err = t.meter.Int64ObservableCounter("amqprpc.client.replies.dropped", metric.WithUnit("{reply}"),
			metric.WithDescription("Replies dropped because they matched no pending call: late, duplicate or forged."))
		errs = append(errs, err)
		insts = append(insts, drop)
	}
	reg, err := t.meter.RegisterCallback(func(_ context.Context, ob metric.Observer) error {
		attrs := metric.WithAttributes(rpcSystem, semconv.MessagingClientID(id))
		ob.ObserveInt64(gauge, int64(waiting()), attrs)
		ob.ObserveInt64(recon, int64(reconnects()), attrs)
		if dropped != nil {
			ob.ObserveInt64(drop, int64(dropped()), attrs)
		}
		return nil
	}, insts...)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		otel.Handle(err)
	}
	if reg == nil {
		return func() error { return nil }
	}
	return reg.Unregister
}

// method returns what is kept of serviceMethod. A method not kept yet is
// added when admit says it may be (a client's calls; a server's answered
// requests) and there is room; otherwise it is "_OTHER".
func (t *telemetry) method(serviceMethod string, admit bool) *methodTel {
	t.mu.RLock()
	m := t.methods[serviceMethod]
	t.mu.RUnlock()
	if m != nil {
		return m
	}
	if !admit {
		return t.other
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if m = t.methods[serviceMethod]; m != nil {
		return m
	}
	if len(t.methods) >= maxMethods {
		return t.other
	}
	m = newMethodTel(serviceMethod)
	t.methods[serviceMethod] = m
	return m
}

func newMethodTel(serviceMethod string) *methodTel {
	service, method := splitMethod(serviceMethod)
	m := &methodTel{
		name:     spanName(serviceMethod),
		attrs:    []attribute.KeyValue{rpcSystem, semconv.RPCService(service), semconv.RPCMethod(method)},
		outcomes: make(map[string]*outcomeTel),
	}
	m.ok = newOutcomeTel(m.attrs)
	return m
}

func newOutcomeTel(kv []attribute.KeyValue) *outcomeTel {
	opt := metric.WithAttributeSet(attribute.NewSet(kv...))
	return &outcomeTel{record: []metric.RecordOption{opt}, add: []metric.AddOption{opt}}
}

// outcome returns the metric options of m's outcome errorType.
func (t *telemetry) outcome(m *methodTel, errorType string) *outcomeTel {
	if errorType == "" {
		return m.ok
	}
	t.mu.RLock()
	o := m.outcomes[errorType]
	t.mu.RUnlock()
	if o != nil {
		return o
	}
	o = newOutcomeTel(append(slices.Clip(m.attrs), semconv.ErrorTypeKey.String(errorType)))
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev := m.outcomes[errorType]; prev != nil {
		return prev
	}
	m.outcomes[errorType] = o
	return o
}

// splitMethod splits "Service.Method" as net/rpc does, at the last dot.
func splitMethod(serviceMethod string) (service, method string) {
	if i := strings.LastIndexByte(serviceMethod, '.'); i >= 0 {
		return serviceMethod[:i], serviceMethod[i+1:]
	}
	return serviceMethod, ""
}

// spanName is a call's span name, "Service/Method", as the RPC conventions
// ask.
func spanName(serviceMethod string) string {
	service, method := splitMethod(serviceMethod)
	if method == "" {
		return service
	}
	return service + "/" + method
}

// messageAttrs are the span attributes of a request message, sent or
// received: the RPC's and the messaging ones.
func messageAttrs(m *methodTel, exchange, key, messageID, correlationID string, size int, op attribute.KeyValue, extra attribute.KeyValue) []attribute.KeyValue {
	name := "publish" // the AMQP method: basic.publish
	if op == semconv.MessagingOperationTypeProcess {
		name = "process"
	}
	return append(slices.Clip(m.attrs),
		semconv.MessagingSystemRabbitMQ,
		op,
		semconv.MessagingOperationName(name),
		semconv.MessagingDestinationName(exchange),
		semconv.MessagingRabbitMQDestinationRoutingKey(key),
		semconv.MessagingMessageID(messageID),
		semconv.MessagingMessageConversationID(correlationID),
		semconv.MessagingMessageBodySize(size),
		extra,
	)
}

// startCall starts the span of a call of method m (client) or of a
// request for it (server), as a child of ctx's span, and counts it as
// active. The returned callSpan ends with end.
func (t *telemetry) startCall(ctx context.Context, m *methodTel) callSpan {
	ctx, span := t.startSpan(ctx, m)
	cs := callSpan{ctx: ctx, span: span, m: m}
	if t.duration.Enabled(ctx) || span.IsRecording() {
		cs.start = time.Now()
	}
	if t.active.Enabled(ctx) {
		cs.counted = true
		t.active.Add(ctx, 1, t.activeAdd...)
	}
	return cs
}

// callSpan is the telemetry of one call (client) or request (server).
type callSpan struct {
	ctx     context.Context // holds span
	span    trace.Span
	m       *methodTel
	start   time.Time // zero: no duration is recorded
	counted bool      // in the active calls or requests
}

// event adds a span event, if the span records.
func (cs *callSpan) event(name string, attrs ...attribute.KeyValue) {
	switch {
	case cs.span == nil || !cs.span.IsRecording():
	case len(attrs) == 0:
		cs.span.AddEvent(name)
	default:
		cs.span.AddEvent(name, trace.WithAttributes(attrs...))
	}
}

// outcomeEvent adds the event of a request's publishing outcome:
// confirmed, returned (mandatory, no queue) or nacked.
func (cs *callSpan) outcomeEvent(o transport.Outcome) {
	switch o {
	case transport.Acked:
		cs.event(eventConfirmed)
	case transport.Returned:
		cs.event(eventReturned)
	case transport.Nacked:
		cs.event(eventNacked)
	}
}

// end ends the span with err's outcome (errorType for metrics, "" on
// success) and records, under method m, the duration and the response
// size (< 0: none).
func (t *telemetry) end(cs *callSpan, m *methodTel, err error, errorType string, responseSize int) {
	if cs.span == nil {
		return
	}
	if err != nil && cs.span.IsRecording() {
		cs.span.RecordError(err)
		cs.span.SetStatus(codes.Error, err.Error())
		cs.span.SetAttributes(semconv.ErrorTypeKey.String(errorType))
	}
	cs.span.End()
	if cs.counted {
		t.active.Add(cs.ctx, -1, t.activeAdd...)
	}
	if !cs.start.IsZero() && t.duration.Enabled(cs.ctx) {
		o := t.outcome(m, errorType)
		t.duration.Record(cs.ctx, float64(time.Since(cs.start))/float64(time.Millisecond), o.record...)
		if responseSize >= 0 {
			t.responseSize.Record(cs.ctx, int64(responseSize), o.record...)
		}
	}
}

// recordRequestSize records the body size of a request of m, sent or
// received.
func (t *telemetry) recordRequestSize(ctx context.Context, m *methodTel, size int) {
	if t.requestSize.Enabled(ctx) {
		t.requestSize.Record(ctx, int64(size), t.outcome(m, "").record...)
	}
}

// inject writes ctx's span context (and baggage) into p's headers through
// the propagator. Without either there is nothing to carry, and p is left
// as it is: the no-op path allocates nothing.
func (t *telemetry) inject(ctx context.Context, p *amqp.Publishing) {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return
	}
	if p.Headers == nil {
		p.Headers = amqp.Table{}
	}
	t.prop.Inject(ctx, headerCarrier(p.Headers))
}

// extract returns a context holding the span context that headers carry.
func (t *telemetry) extract(headers amqp.Table) context.Context {
	return t.prop.Extract(context.Background(), headerCarrier(headers))
}

// headerCarrier adapts AMQP headers to a propagation.TextMapCarrier. It
// reads string values and byte arrays (what some clients send for
// strings), and writes strings.
type headerCarrier amqp.Table

func (h headerCarrier) Get(key string) string {
	switch v := h[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}

func (h headerCarrier) Set(key, value string) { h[key] = value }

func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// errorTypeOf is the error.type of a client call's failure: a short, stable
// name for each of the errors CallContext documents, "_OTHER" for the
// rest, "" for none.
func errorTypeOf(err error) string {
	if err == nil {
		return ""
	}
	switch {
	case errors.Is(err, ErrQueueUnavailable):
		return "queue_unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, ErrNoRoute):
		return "no_route"
	case errors.Is(err, ErrNotTaken):
		return "not_taken"
	case errors.Is(err, ErrRefused):
		return "refused"
	case errors.Is(err, ErrBadReply):
		return "bad_reply"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrTooLong):
		return "too_long"
	case errors.Is(err, rpc.ErrShutdown):
		return "shutdown"
	}
	if _, ok := err.(rpc.ServerError); ok {
		return "server_error"
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// startRequest starts the server span of req, a child of the span whose
// context its headers carry, and its metrics.
func (t *telemetry) startRequest(req *request) {
	d := &req.d
	m := t.method(d.Type, false)
	if m == t.other { // not answered before: named for its span, kept only once answered
		m = newMethodTel(d.Type)
	}
	req.cs = t.startCall(t.extract(d.Headers), m)
	if req.cs.span.IsRecording() {
		req.cs.span.SetAttributes(requestAttrs(m, d)...)
		if d.Redelivered {
			req.cs.event(eventRedelivery)
		}
	}
}

// requestAttrs are the span attributes of request d of method m, received.
func requestAttrs(m *methodTel, d *amqp.Delivery) []attribute.KeyValue {
	return messageAttrs(m, d.Exchange, d.RoutingKey, d.MessageId, d.CorrelationId, len(d.Body), semconv.MessagingOperationTypeProcess,
		semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)))
}

// endRequest ends req's span and metrics with the outcome respond saw.
func (t *telemetry) endRequest(req *request) {
	var err error
	if req.errType != "" {
		err = errors.New(req.errText)
	}
	// A method name from the wire is kept only once a request of it was
	// answered, not refused as unknown or malformed.
	m := t.method(req.d.Type, req.errType != "unknown_method" && req.errType != "bad_request")
	t.recordRequestSize(req.cs.ctx, m, len(req.d.Body))
	t.end(&req.cs, m, err, req.errType, req.replySize)
}

// startSpan starts the span of a call or request of method m. While the
// global tracer provider is in use and nothing was set as the global yet,
// the span would be a non-recording one carrying ctx's span context: then
// it returns ctx and a no-op span, which propagate the same span context
// without the global's two allocations and its lookup in ctx (3% of the
// CPU of a call in the benchmark). Once a provider is set, spans start
// from it, as they would through the global.
func (t *telemetry) startSpan(ctx context.Context, m *methodTel) (context.Context, trace.Span) {
	if t.unset != nil && otel.GetTracerProvider() == t.unset {
		return ctx, noop.Span{}
	}
	return t.tracer.Start(ctx, m.name, t.start...)
}

// serverSpan is the span a handler's context holds: cs's span, or without
// a tracer provider set (startSpan's no-op span), the non-recording span
// the propagator extracted, which carries the caller's span context.
func (cs *callSpan) serverSpan() trace.Span {
	if _, ok := cs.span.(noop.Span); ok {
		return trace.SpanFromContext(cs.ctx) // from the request's headers: no local span is in it
	}
	return cs.span
}

// note records what happened to request d when no handler runs for it (a
// duplicate, a malformed request): counter counts it, and a short server
// span, a child of the caller's, shows event (and err, if any).
func (t *telemetry) note(d *amqp.Delivery, counter metric.Int64Counter, event string, err error) {
	ctx := t.extract(d.Headers)
	m := t.method(d.Type, false)
	if counter.Enabled(ctx) {
		counter.Add(ctx, 1, t.outcome(m, "").add...)
	}
	if m == t.other {
		m = newMethodTel(d.Type) // for the span's name and attributes
	}
	_, span := t.startSpan(ctx, m)
	if span.IsRecording() {
		span.SetAttributes(requestAttrs(m, d)...)
		span.AddEvent(event)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// count adds one to counter, for request d; admit says its method may be
// kept (its handler ran: see method).
func (t *telemetry) count(ctx context.Context, counter metric.Int64Counter, d *amqp.Delivery, admit bool) {
	if ctx == nil { // a request of NewServerCodec's: no span
		ctx = context.Background()
	}
	if counter.Enabled(ctx) {
		counter.Add(ctx, 1, t.outcome(t.method(d.Type, admit), "").add...)
	}
}

// serverErrorType is the error.type of a request answered with errText
// (by the handler, or by net/rpc or the server for it).
func serverErrorType(req *request, errText string) string {
	switch {
	case strings.HasPrefix(errText, "rpc: can't find"):
		return "unknown_method"
	case req.bad:
		return "bad_request"
	}
	return "handler_error"
}
