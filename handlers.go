package amqprpc

import (
	"context"
	"errors"
	"go/token"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/trace"
)

// Register publishes on the server the methods of rcvr that net/rpc
// serves (see rpc.Server.Register: it registers them on the server's
// *rpc.Server) and also those of the form
//
//	func (t *T) MethodName(ctx context.Context, args T1, reply *T2) error
//
// which net/rpc cannot serve, following net/rpc's rules otherwise: an
// exported method, args and reply of exported or builtin types, reply a
// pointer, one result of type error. The service is named after rcvr's
// type, as with net/rpc. Callers call both kinds alike.
//
// ctx carries the caller's deadline: the time the request was taken plus
// its AMQP expiration, and no later than its publish timestamp (whole
// seconds, so plus one) plus its expiration, so that time spent waiting in
// the queue counts (with the clocks of client and server in step). ctx is
// also cancelled when Shutdown's context ends before the handler does
// (Close waits for handlers, as net/rpc's do). RequestFromContext gives the
// call's details; trace.SpanFromContext(ctx) the server's span for the
// call (see WithTracerProvider), so spans the handler starts from ctx are
// its children. A request whose deadline has passed when a server takes
// it is not run, whatever its kind: it is acked without a reply, since its
// caller has stopped waiting.
//
// The errors are net/rpc's: no service name, a type not exported, no
// suitable method of either kind, a service already defined.
func (s *Server) Register(rcvr any) error { return s.register(rcvr, "", false) }

// RegisterName is Register with the service name given rather than taken
// from rcvr's type, as rpc.Server.RegisterName.
func (s *Server) RegisterName(name string, rcvr any) error { return s.register(rcvr, name, true) }

// ctxService is a receiver's context-aware methods.
type ctxService struct {
	rcvr    reflect.Value
	methods map[string]*ctxMethod
	netrpc  bool // its other methods are registered with net/rpc
}

type ctxMethod struct {
	fn        reflect.Value // the method's func: receiver first
	argType   reflect.Type
	replyType reflect.Type // a pointer
}

// ctxServices maps a service name to its context-aware methods.
type ctxServices struct {
	mu sync.RWMutex
	m  map[string]*ctxService
}

func (s *Server) register(rcvr any, name string, useName bool) error {
	rv := reflect.ValueOf(rcvr)
	typ := reflect.TypeOf(rcvr)
	sname := name
	if !useName {
		sname = reflect.Indirect(rv).Type().Name()
	}
	if sname == "" {
		return errors.New("rpc.Register: no service name for type " + typ.String())
	}
	if sname == reservedService {
		return errors.New("amqprpc: the service name " + reservedService + " is reserved (PingMethod)")
	}
	if !useName && !token.IsExported(sname) {
		return errors.New("rpc.Register: type " + sname + " is not exported")
	}
	methods := ctxMethods(typ)
	svc := &ctxService{rcvr: rv, methods: methods}
	// The context-aware services are checked first: a name taken there
	// must not leave rcvr registered with net/rpc, unreachable.
	s.ctxHandlers.mu.Lock()
	defer s.ctxHandlers.mu.Unlock()
	if _, dup := s.ctxHandlers.m[sname]; dup {
		return errors.New("rpc: service already defined: " + sname)
	}
	if len(methods) == 0 || hasNetRPCMethods(typ) {
		// net/rpc checks the rest, and says what is wrong.
		var err error
		if useName {
			err = s.rcvr.RegisterName(name, rcvr)
		} else {
			err = s.rcvr.Register(rcvr)
		}
		if err != nil {
			return err
		}
		svc.netrpc = true
	}
	if len(methods) == 0 {
		return nil
	}
	if s.ctxHandlers.m == nil {
		s.ctxHandlers.m = make(map[string]*ctxService)
	}
	s.ctxHandlers.m[sname] = svc
	return nil
}

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// ctxMethods returns typ's methods of the context-aware form.
func ctxMethods(typ reflect.Type) map[string]*ctxMethod {
	methods := make(map[string]*ctxMethod)
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		mt := m.Type
		if !m.IsExported() || mt.NumIn() != 4 || mt.In(1) != contextType || mt.NumOut() != 1 || mt.Out(0) != errorType {
			continue
		}
		arg, reply := mt.In(2), mt.In(3)
		if !exportedOrBuiltin(arg) || reply.Kind() != reflect.Pointer || !exportedOrBuiltin(reply) {
			continue
		}
		methods[m.Name] = &ctxMethod{fn: m.Func, argType: arg, replyType: reply}
	}
	return methods
}

// hasNetRPCMethods reports whether net/rpc would serve any method of typ
// (net/rpc's suitableMethods), so that registering a receiver with only
// context-aware methods does not make net/rpc log that it has none.
func hasNetRPCMethods(typ reflect.Type) bool {
	for i := range typ.NumMethod() {
		m := typ.Method(i)
		mt := m.Type
		if m.IsExported() && mt.NumIn() == 3 && exportedOrBuiltin(mt.In(1)) && mt.In(2).Kind() == reflect.Pointer &&
			exportedOrBuiltin(mt.In(2)) && mt.NumOut() == 1 && mt.Out(0) == errorType {
			return true
		}
	}
	return false
}

// exportedOrBuiltin is net/rpc's isExportedOrBuiltinType.
func exportedOrBuiltin(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return token.IsExported(t.Name()) || t.PkgPath() == ""
}

// lookup returns the context-aware method serviceMethod names, or nil; a
// service that net/rpc does not know, with no such method, gets net/rpc's
// error text.
func (cs *ctxServices) lookup(serviceMethod string) (*ctxService, *ctxMethod, string) {
	dot := strings.LastIndex(serviceMethod, ".")
	if dot < 0 {
		return nil, nil, ""
	}
	cs.mu.RLock()
	svc := cs.m[serviceMethod[:dot]]
	cs.mu.RUnlock()
	if svc == nil {
		return nil, nil, ""
	}
	if m := svc.methods[serviceMethod[dot+1:]]; m != nil {
		return svc, m, ""
	}
	if !svc.netrpc {
		return nil, nil, "rpc: can't find method " + serviceMethod
	}
	return nil, nil, ""
}

// callCtx runs req through the context-aware method m of svc, as net/rpc
// runs the others: the same decoding of args, the same error texts.
func (s *Server) callCtx(c *serverCodec, req *request, svc *ctxService, m *ctxMethod) {
	var argv reflect.Value
	if m.argType.Kind() == reflect.Pointer {
		argv = reflect.New(m.argType.Elem())
	} else {
		argv = reflect.New(m.argType)
	}
	if err := c.decode(req, argv.Interface()); err != nil {
		_ = c.respond(req, err.Error(), nil)
		return
	}
	if m.argType.Kind() != reflect.Pointer {
		argv = argv.Elem()
	}
	replyv := reflect.New(m.replyType.Elem())
	switch m.replyType.Elem().Kind() {
	case reflect.Map:
		replyv.Elem().Set(reflect.MakeMap(m.replyType.Elem()))
	case reflect.Slice:
		replyv.Elem().Set(reflect.MakeSlice(m.replyType.Elem(), 0, 0))
	}
	ctx, cancel := s.callContext(req)
	defer cancel()
	out := m.fn.Call([]reflect.Value{svc.rcvr, reflect.ValueOf(ctx), argv, replyv})
	var errText string
	if err, _ := out[0].Interface().(error); errors.Is(err, ErrIgnoreRequest) {
		errText = ErrIgnoreRequest.Error() // wrapped or not: net/rpc's handlers can only return it bare
	} else if err != nil {
		errText = err.Error()
	}
	_ = c.respond(req, errText, replyv.Interface())
}

// Request is what a context-aware handler can learn of its call (see
// RequestFromContext).
type Request struct {
	ServiceMethod string    // "Service.Method"
	ClientID      string    // the caller's id: its reply_to
	CorrelationID string    // the request's correlation_id
	RoutingKey    string    // that routed it: "" for the main request queue, or To's key
	Redelivered   bool      // the broker delivered it before, to this or another server
	Deadline      time.Time // zero when the request carries no expiration
}

type requestKey struct{}

// RequestFromContext returns the details of the call that ctx, a
// context-aware handler's, belongs to; false for any other context.
func RequestFromContext(ctx context.Context) (Request, bool) {
	r, ok := ctx.Value(requestKey{}).(Request)
	return r, ok
}

// callContext is the context of req's handler: cancelled at its deadline
// and when Shutdown stops waiting for handlers, carrying the call's
// details, its server span and the caller's OpenTelemetry baggage. Close
// does not cancel it: Close waits for handlers to finish.
func (s *Server) callContext(req *request) (context.Context, context.CancelFunc) {
	d := &req.d
	ctx := trace.ContextWithSpan(s.handlers, req.cs.serverSpan()) // and the caller's baggage, if any
	if b := baggage.FromContext(req.cs.ctx); b.Len() > 0 {
		ctx = baggage.ContextWithBaggage(ctx, b)
	}
	ctx = context.WithValue(ctx, requestKey{}, Request{
		ServiceMethod: d.Type, ClientID: d.ReplyTo, CorrelationID: d.CorrelationId,
		RoutingKey: d.RoutingKey, Redelivered: d.Redelivered, Deadline: req.deadline,
	})
	if req.deadline.IsZero() {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, req.deadline)
}

// requestDeadline is when a request stops being worth running: taken, as
// of now, plus its expiration in ms (the broker does not lower it while
// the request waits), but no later than its publish timestamp, which AMQP
// gives in whole seconds, plus one second plus the expiration. Zero
// without an expiration.
func requestDeadline(expiration string, timestamp time.Time, now time.Time) time.Time {
	ms, err := strconv.ParseInt(expiration, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	ttl := time.Duration(ms) * time.Millisecond
	deadline := now.Add(ttl)
	if !timestamp.IsZero() {
		if bound := timestamp.Add(time.Second + ttl); bound.Before(deadline) {
			deadline = bound
		}
	}
	return deadline
}
