package amqprpc

import (
	"context"
	"errors"
	"net/rpc"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/amqprpc/amqprpc/internal/link"
	"github.com/amqprpc/amqprpc/internal/transport"
)

func init() {
	link.Fanout = func() any {
		return Option(func(o *options) error { o.fanout = true; return nil })
	}
	link.CallAll = func(ctx context.Context, client any, serviceMethod string, args any, newReply func() any, want int) ([]link.Result, error) {
		return client.(*Client).callAll(ctx, serviceMethod, args, newReply, want)
	}
}

// broadcasts is a client codec's state for CallAll: each broadcast is
// numbered under its own correlation id prefix, and its replies go to its
// gather rather than to net/rpc. gathers is protected by the codec's mu.
type broadcasts struct {
	gatherPrefix string        // of the correlation ids of broadcasts
	gatherSeq    atomic.Uint64 // numbers broadcasts
	gathers      map[uint64]*gather
}

// gather collects every reply to one broadcast; see callAll. Its replies
// are raw: the caller decodes them on its own goroutine.
type gather struct {
	mu sync.Mutex
	// protects replies and err
	replies []amqp.Delivery
	err     error         // the broadcast failed (no route, refused)
	ready   chan struct{} // capacity 1: replies or err changed
}

func (g *gather) add(d amqp.Delivery, err error) {
	g.mu.Lock()
	if err != nil {
		g.err = err
	} else {
		g.replies = append(g.replies, d)
	}
	g.mu.Unlock()
	signal(g.ready)
}

func (g *gather) take() ([]amqp.Delivery, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.replies
	g.replies = nil
	return r, g.err
}

// callAll sends one request that every server of the namespace receives (the
// namespace must be fanout) and gathers their replies until want arrived
// (want <= 0: until ctx ends) or ctx ends. Without deadline in ctx the
// default call timeout bounds it. It returns ctx.Err() only when nothing
// arrived.
func (c *Client) callAll(ctx context.Context, serviceMethod string, args any, newReply func() any, want int) (results []link.Result, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok && c.codec.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.codec.timeout)
		defer cancel()
	}
	deadline, _ := ctx.Deadline()
	cc := c.codec
	// One span for the broadcast, with an event per reply; it fails only
	// when no reply came.
	cs := cc.tel.startCall(ctx, cc.tel.method(serviceMethod, true))
	defer func() { cc.tel.end(&cs, cs.m, err, errorTypeOf(err), -1) }()
	_, data, err := cc.encodeArgs(serviceMethod, args) // a broadcast has no routing key
	if err != nil {
		return nil, err
	}

	g := &gather{ready: make(chan struct{}, 1)}
	seq := cc.gatherSeq.Add(1)
	cc.mu.Lock()
	cc.gathers[seq] = g
	cc.mu.Unlock()
	defer func() {
		cc.mu.Lock()
		delete(cc.gathers, seq)
		cc.mu.Unlock()
	}()

	id := correlationID(cc.gatherPrefix, seq)
	cc.describeSend(&cs, "", cc.gatherPrefix, seq, len(data))
	msg := cc.request("", id, serviceMethod, data, deadline)
	cc.tel.inject(cs.ctx, &msg.Publishing)
	err = cc.pub.Publish(msg, func(o transport.Outcome) {
		cs.outcomeEvent(o)
		if err := cc.outcomeError(o, "", cc.requestExchange); err != nil {
			g.add(amqp.Delivery{}, err)
		}
	})
	if errors.Is(err, transport.ErrClosed) {
		return nil, rpc.ErrShutdown
	} else if err != nil {
		return nil, err
	}

	for {
		select {
		case <-g.ready:
			replies, err := g.take()
			for i := range replies {
				res := cc.decodeResult(&replies[i], newReply)
				results = append(results, res)
				if res.Err != nil {
					cs.event(eventReply, semconv.ErrorTypeKey.String(errorTypeOf(res.Err)))
				} else {
					cs.event(eventReply)
				}
			}
			if err != nil && len(results) == 0 {
				return nil, err
			}
			if want > 0 && len(results) >= want {
				return results, nil
			}
		case <-ctx.Done():
			if len(results) == 0 {
				return nil, ctx.Err()
			}
			return results, nil
		case <-cc.closed:
			if len(results) == 0 {
				return nil, rpc.ErrShutdown
			}
			return results, nil
		}
	}
}

// decodeResult turns one reply to a broadcast into a Result.
func (c *clientCodec) decodeResult(d *amqp.Delivery, newReply func() any) link.Result {
	if text, isErr := remoteError(d); isErr {
		return link.Result{Err: rpc.ServerError(text)}
	}
	reply := newReply()
	return link.Result{Reply: reply, Err: c.decodeReply(d, reply)}
}
