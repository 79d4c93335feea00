package amqprpc

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// ignoreLimit is how many times a direct request may be ignored
// (ErrIgnoreRequest) before its caller is told that no server took it.
const ignoreLimit = 10

// headerIgnored counts, on a request put back after ErrIgnoreRequest, how
// many times servers ignored it.
const headerIgnored = "x-amqprpc-ignored"

// ignoreDelay is how long a direct server holds a request it ignored for
// the n-th time before putting it back: 50 ms, doubling, at most 500 ms, so
// that an ignored request cannot spin through the queue.
func ignoreDelay(n int) time.Duration {
	d := 50 * time.Millisecond << min(max(n, 0), 4)
	return min(d, 500*time.Millisecond)
}

// ignore handles a request whose handler returned ErrIgnoreRequest. A
// fanout server acks it without reply. A direct server puts a copy back
// where it came from, counting the ignores in a header and waiting longer
// each time, and acks the original once the copy is confirmed; after
// ignoreLimit ignores, or if the copy finds no queue, it answers the caller
// with an error instead.
func (c *serverCodec) ignore(req *request) {
	req.cs.event(eventIgnored)
	c.tel.count(req.cs.ctx, c.tel.ignored, &req.d, true)
	if c.names.fanout { // ignored broadcasts are acked, not put back
		c.settle(req, transport.Acked, nil)
		return
	}
	n := ignoredCount(req.d.Headers[headerIgnored])
	if int(n)+1 >= ignoreLimit {
		_ = c.publishReply(req, &reply{errText: fmt.Errorf("%w: ignored %d times", ErrNotTaken, n+1).Error(), code: codeNotTaken})
		return
	}
	// The copy is the same call: forget it, or it would look like a
	// duplicate.
	c.forget(req, false, nil)
	d := &req.d
	headers := maps.Clone(d.Headers)
	if headers == nil {
		headers = amqp.Table{}
	}
	headers[headerIgnored] = n + 1
	again := amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, DeliveryMode: d.DeliveryMode,
		CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, Body: d.Body,
	}
	time.AfterFunc(ignoreDelay(int(n)), func() {
		// Mandatory: if the queue went away meanwhile, the caller hears
		// so now rather than at its deadline.
		err := c.pub.Publish(transport.Message{Exchange: d.Exchange, Key: d.RoutingKey, Mandatory: true, Deadline: req.deadline, Publishing: again},
			func(o transport.Outcome) {
				switch o {
				case transport.Returned:
					_ = c.publishReply(req, &reply{errText: (&noRouteError{key: d.RoutingKey}).Error(), code: codeNoRoute})
				case transport.Nacked, transport.Failed, transport.TooLarge:
					// Settling would requeue it, to be ignored again
					// without end: the caller hears now instead.
					_ = c.publishReply(req, &reply{errText: "amqprpc: an ignored request could not be put back: " + notSent("it", o)})
				default:
					c.settle(req, o, nil)
				}
			})
		switch {
		case errors.Is(err, transport.ErrClosed):
			c.settle(req, transport.Abandoned, nil) // back to the queue, for another server
		case err != nil:
			// A header the copy cannot carry: requeued, it would be
			// ignored again without end.
			_ = c.publishReply(req, &reply{errText: truncateError("amqprpc: an ignored request could not be put back: " + err.Error())})
		}
	})
}

// ignoredCount reads the x-amqprpc-ignored header, of whatever integer
// type the sender chose (amqplib picks the smallest that fits), clamped
// to 0..ignoreLimit: the header is the client's to forge.
func ignoredCount(v any) int32 {
	var n int64
	switch rv := reflect.ValueOf(v); {
	case rv.CanInt():
		n = rv.Int()
	case rv.CanUint():
		n = int64(min(rv.Uint(), ignoreLimit))
	}
	return int32(min(max(n, 0), ignoreLimit))
}
