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

// maxIdleHandlers is how many handler goroutines of a codec may wait for
// calls; more end when they are done.
const maxIdleHandlers = 32

// serve runs c's calls until ctx ends, Close, c's limit or the loss of c's
// consumer: each call in a goroutine of its own, as net/rpc does, but with
// a recover, so that a panicking handler is answered with an error instead
// of taking the process down. It returns once c's calls are settled, or
// when Shutdown gives up waiting for them.
//
// The goroutines take turns (leader and followers): the one whose turn it
// is waits for the next call and runs it itself, once another waits to take
// the next turn. So no hand-off lies between a call's delivery and its
// handler, and goroutines (whose stacks have grown on the way down to the
// methods) are kept for the next calls: when every call had a new goroutine,
// copying its stack took 4% of the benchmark's CPU.
func (s *Server) serve(ctx context.Context, c *serverCodec, main bool) {
	defer s.running.Done()
	stop := context.AfterFunc(ctx, c.stop)
	var (
		goroutines sync.WaitGroup
		waiting    atomic.Int32          // for their turn
		turn       sync.Mutex            // held by the goroutine waiting for the next call
		done       = make(chan struct{}) // closed, under turn, once c has no more calls
	)
	var work func()
	work = func() {
		defer goroutines.Done() // also when a handler calls runtime.Goexit
		for {
			waiting.Add(1)
			turn.Lock()
			waiting.Add(-1)
			req, err := c.nextUnless(done)
			if err != nil {
				turn.Unlock()
				return
			}
			if waiting.Load() == 0 {
				goroutines.Add(1)
				go work() // to take the next turn
			}
			turn.Unlock()
			s.handle(c, req)
			if waiting.Load() >= maxIdleHandlers {
				return
			}
		}
	}
	goroutines.Add(1)
	go work()
	<-done
	waited := make(chan struct{})
	go func() { goroutines.Wait(); close(waited) }()
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

// nextUnless returns c's next call, or an error once done is closed; it
// closes done when c has no more calls. The caller holds serve's turn.
func (c *serverCodec) nextUnless(done chan struct{}) (*request, error) {
	select {
	case <-done:
		return nil, io.EOF
	default:
	}
	req, err := c.next()
	if err != nil {
		close(done)
	}
	return req, err
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
