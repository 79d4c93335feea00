package amqprpc

import (
	"context"
	"fmt"
	"io"
	"net/rpc"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// maxIdleHandlers is how many handler goroutines of a codec wait for the
// next call when they are done; more end.
const maxIdleHandlers = 32

// serve runs c's calls until ctx ends, Close, c's limit or the loss of c's
// consumer: each call in a goroutine of its own, as net/rpc does (reused
// once it is done), but with
// a recover, so that a panicking handler is answered with an error instead
// of taking the process down. It returns once c's calls are settled, or
// when Shutdown gives up waiting for them.
func (s *Server) serve(ctx context.Context, c *serverCodec, main bool) {
	defer s.running.Done()
	stop := context.AfterFunc(ctx, c.stop)
	var handlers sync.WaitGroup
	// A call goes to an idle handler goroutine when there is one, else to
	// a new one. A new goroutine's stack grows on the way down to the
	// method, and copying it cost about 4% of the benchmark's CPU when
	// every call had a goroutine of its own.
	work := make(chan *request)
	var idle atomic.Int32
	run := func(req *request) {
		defer handlers.Done() // also when the handler calls runtime.Goexit
		s.handle(c, req)
	}
	worker := func(req *request) {
		for ok := true; ok; {
			run(req)
			if idle.Add(1) > maxIdleHandlers {
				idle.Add(-1)
				return
			}
			req, ok = <-work
			idle.Add(-1)
		}
	}
	for {
		req, err := c.next()
		if err != nil {
			break
		}
		handlers.Add(1)
		select {
		case work <- req:
		default:
			go worker(req)
		}
	}
	close(work) // the idle handler goroutines end
	waited := make(chan struct{})
	go func() { handlers.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-s.abandon: // Shutdown gave up on them
	}
	stop()
	_ = c.Close()
	s.mu.Lock()
	delete(s.active, c)
	if main {
		s.serving = false
	}
	s.mu.Unlock()
}

// handle runs one call through net/rpc's ServeRequest, which looks the
// method up, decodes the args, calls the method and writes the reply, all on
// this goroutine.
func (s *Server) handle(c *serverCodec, req *request) {
	c.tel.startRequest(req)
	defer c.tel.endRequest(req) // after the reply, or the recover's
	defer func() {
		p := recover()
		if !req.decoded { // settle the limit's bookkeeping too
			_ = c.decode(req, nil)
		}
		if req.answered.Load() {
			if p != nil { // after the reply: nobody hears of it but the log
				c.log.Error("amqprpc: handler panicked after its reply", "type", req.d.Type, "panic", p, "stack", string(debug.Stack()))
			}
			return
		}
		// A panic, or runtime.Goexit, before the reply was written.
		text := fmt.Sprintf("amqprpc: %s ended without a reply", req.d.Type)
		req.errType = "no_reply"
		if p != nil {
			c.log.Error("amqprpc: handler panicked", "type", req.d.Type, "panic", p, "stack", string(debug.Stack()))
			text = fmt.Sprintf("amqprpc: %s panicked: %v", req.d.Type, p)
			req.errType = "panic"
		}
		_ = c.respond(req, text, nil)
	}()
	if !req.deadline.IsZero() && !time.Now().Before(req.deadline) {
		// Its caller has given up: running it would be work for nobody.
		// The error reply expires with it, unsent, and it is acked.
		req.cs.event(eventExpired)
		req.errType = "expired"
		_ = c.respond(req, "amqprpc: the call's deadline passed before it ran", nil)
		return
	}
	if req.d.Type == PingMethod {
		_ = c.echo(req)
		return
	}
	if svc, m, text := s.ctxHandlers.lookup(req.d.Type); m != nil {
		s.callCtx(c, req, svc, m)
		return
	} else if text != "" {
		_ = c.respond(req, text, nil)
		return
	}
	_ = s.rcvr.ServeRequest(&oneCall{c: c, req: req})
}

// oneCall is a net/rpc ServerCodec that holds exactly one request.
type oneCall struct {
	c    *serverCodec
	req  *request
	read bool
}

func (o *oneCall) ReadRequestHeader(r *rpc.Request) error {
	if o.read {
		return io.EOF
	}
	o.read = true
	r.ServiceMethod = o.req.d.Type
	return nil
}

func (o *oneCall) ReadRequestBody(body any) error { return o.c.decode(o.req, body) }

func (o *oneCall) WriteResponse(r *rpc.Response, body any) error {
	return o.c.respond(o.req, r.Error, body)
}

func (o *oneCall) Close() error { return nil }
