package amqprpc

import (
	"fmt"
	"io"
	"log/slog"
	"net/rpc"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// request is a delivery the server codec has handed to net/rpc and not yet
// settled (acked or rejected).
type request struct {
	d        amqp.Delivery
	codec    codec.Codec
	bad      bool      // its body did not decode: reject rather than ack
	deadline time.Time // from its expiration: its reply is worthless after it
}

// serverCodec is the rpc.ServerCodec behind Server; see NewServerCodec.
type serverCodec struct {
	names
	custom     codec.Codec // accepted besides the built-in codecs
	fanout     bool        // ignored requests are acked, not put back
	maxBody    int
	log        *slog.Logger
	pub        *transport.Publisher
	deliveries <-chan amqp.Delivery
	release    func() error // stops consuming (unacked deliveries go back), once
	cancel     func()       // asks the broker for no more deliveries

	stopping  chan struct{} // closed by stop: no further reads
	stopOnce  sync.Once
	closeOnce sync.Once
	closeErr  error
	lost      error          // set by the reader when deliveries ended on their own
	inflight  sync.WaitGroup // requests read and not yet settled

	mu sync.Mutex
	// protects pending
	pending map[uint64]*request

	// Read side: net/rpc reads header/body pairs from one goroutine.
	seq   uint64
	cur   *request
	limit int          // of well-formed calls to read; <= 0: no limit
	count atomic.Int64 // well-formed calls read so far (also read by the consumer)

}

type serverCodecConfig struct {
	names
	opts  *options
	pub   *transport.Publisher
	limit int // stop after this many well-formed calls; <= 0: no limit
}

func newServerCodec(cfg serverCodecConfig) *serverCodec {
	return &serverCodec{
		names:    cfg.names,
		custom:   cfg.opts.codec,
		maxBody:  cfg.opts.maxBody,
		log:      cfg.opts.logger,
		pub:      cfg.pub,
		limit:    cfg.limit,
		fanout:   cfg.names.fanout,
		stopping: make(chan struct{}),
		pending:  make(map[uint64]*request),
	}
}

// attach gives the codec the consumer whose deliveries it reads; closing
// the codec closes it.
func (c *serverCodec) attach(k *transport.Consumer) {
	c.deliveries = k.Deliveries()
	c.release = k.Close
	c.cancel = k.Cancel
}

// remaining is how many more calls a codec with a limit may take.
func (c *serverCodec) remaining() int { return c.limit - int(c.count.Load()) }

// stop makes ReadRequestHeader return io.EOF, so net/rpc's ServeCodec waits
// for its running handlers and then calls Close.
func (c *serverCodec) stop() { c.stopOnce.Do(func() { close(c.stopping) }) }

// ReadRequestHeader returns the next well-formed request. A malformed one is
// refused inside the codec (an error reply where it has a reply address, and
// a reject without requeue) and never returned as an error, which would end
// ServeCodec. It blocks until a request arrives, stop is called (io.EOF) or
// the consumer ends (io.EOF; the cause is kept for Serve).
func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error {
	c.cur = nil
	if c.limit > 0 && c.count.Load() >= int64(c.limit) {
		return io.EOF
	}
	for {
		select {
		case <-c.stopping:
			return io.EOF
		default:
		}
		select {
		case <-c.stopping:
			return io.EOF
		case d, ok := <-c.deliveries:
			if !ok {
				c.lost = errConsumerEnded
				return io.EOF
			}
			req := &request{d: d}
			if ms, err := strconv.ParseInt(d.Expiration, 10, 64); err == nil && ms > 0 {
				req.deadline = time.Now().Add(time.Duration(ms) * time.Millisecond)
			}
			if reason := c.check(req); reason != "" {
				c.refuse(req, reason)
				continue
			}
			c.seq++
			c.inflight.Add(1)
			c.mu.Lock()
			c.pending[c.seq] = req
			c.mu.Unlock()
			c.cur = req
			c.count.Add(1) // until ReadRequestBody finds otherwise
			*r = rpc.Request{ServiceMethod: d.Type, Seq: c.seq}
			return nil
		}
	}
}

// check returns why req cannot be served, or "".
func (c *serverCodec) check(req *request) string {
	d := &req.d
	switch {
	case d.ReplyTo == "" || d.CorrelationId == "":
		return "request without reply_to or correlation_id"
	case d.Type == "":
		return "request without type (the service method)"
	case len(d.Body) > c.maxBody:
		return fmt.Sprintf("request body of %d bytes exceeds the limit of %d", len(d.Body), c.maxBody)
	}
	cd, ok := codec.ByContentType(d.ContentType, c.custom)
	if !ok {
		return fmt.Sprintf("request has unknown content type %q", d.ContentType)
	}
	req.codec = cd
	return ""
}

// refuse answers a malformed request with an error reply, if it has a reply
// address, and rejects it without requeue (to the dead-letter exchange, if
// the queue has one), so it cannot loop.
func (c *serverCodec) refuse(req *request, reason string) {
	c.log.Warn("amqprpc: refused request", "reason", reason,
		"type", req.d.Type, "correlation_id", req.d.CorrelationId)
	req.bad = true
	c.inflight.Add(1)
	if req.d.ReplyTo == "" || req.d.CorrelationId == "" {
		c.settle(req, transport.Abandoned)
		return
	}
	_ = c.publishReply(req, "amqprpc: "+reason, nil)
}

// ReadRequestBody decodes the current request's args into body; a nil body
// discards them. A body that does not decode is answered by net/rpc with an
// error reply, and the request is then rejected instead of acked.
func (c *serverCodec) ReadRequestBody(body any) error {
	req := c.cur
	c.cur = nil
	if req == nil {
		return nil
	}
	if body == nil { // net/rpc found no such method: not a well-formed call
		c.count.Add(-1)
		return nil
	}
	if err := req.codec.Unmarshal(req.d.Body, body); err != nil {
		req.bad = true
		c.count.Add(-1)
		return fmt.Errorf("amqprpc: decoding args: %w", err)
	}
	if c.limit > 0 && c.count.Load() == int64(c.limit) {
		// The last call we may take: stop the broker from sending more
		// while the running ones are acked.
		c.cancel()
	}
	return nil
}

// WriteResponse publishes the reply of request r.Seq to the response
// exchange, routed by the request's reply_to. It does not wait for the
// broker: the request is acked once the reply is confirmed (or requeued if
// the broker refuses the reply), so a crash before that loses nothing.
// net/rpc serialises calls to it.
func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	c.mu.Lock()
	req := c.pending[r.Seq]
	delete(c.pending, r.Seq)
	c.mu.Unlock()
	if req == nil {
		return fmt.Errorf("amqprpc: response to unknown request %d", r.Seq)
	}
	if r.Error == ErrIgnoreRequest.Error() {
		c.ignore(req)
		return nil
	}
	if r.Error != "" {
		return c.publishReply(req, r.Error, nil)
	}
	data, err := req.codec.Marshal(body)
	if err != nil {
		return c.publishReply(req, "amqprpc: encoding reply: "+err.Error(), nil)
	}
	return c.publishReply(req, "", data)
}

// publishReply sends the reply (errText or body) of req and settles req once
// the broker confirms it. The caller has counted req in inflight.
func (c *serverCodec) publishReply(req *request, errText string, body []byte) error {
	msg := amqp.Publishing{
		CorrelationId: req.d.CorrelationId,
		Type:          req.d.Type,
		Body:          body,
	}
	if req.codec != nil { // nil: the request's content type was unknown
		msg.ContentType = req.codec.ContentType()
	}
	if errText != "" {
		msg.Headers = amqp.Table{headerError: errText}
	}
	// Replies only ever go to this namespace's response exchange: reply_to
	// is a routing key there, whatever it says.
	// A reply is worth no more than its request: it expires with it.
	err := c.pub.Publish(transport.Message{Exchange: c.responseExchange, Key: req.d.ReplyTo, Deadline: req.deadline, Publishing: msg},
		func(o transport.Outcome) { c.settle(req, o) })
	if err != nil {
		c.settle(req, transport.Abandoned)
	}
	return err
}

// ignore handles a request whose handler returned ErrIgnoreRequest. A
// fanout server acks it without reply. A direct server puts a copy back
// where it came from, counting the ignores in a header and waiting longer
// each time, and acks the original once the copy is confirmed; after
// ignoreLimit ignores it answers the caller with an error instead.
func (c *serverCodec) ignore(req *request) {
	if c.fanout {
		c.settle(req, transport.Acked)
		return
	}
	n, _ := req.d.Headers[headerIgnored].(int32)
	if int(n)+1 >= ignoreLimit {
		_ = c.publishReply(req, fmt.Sprintf("amqprpc: no server took the request: ignored %d times", n+1), nil)
		return
	}
	d := &req.d
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[headerIgnored] = n + 1
	again := amqp.Publishing{
		Headers: headers, ContentType: d.ContentType, DeliveryMode: d.DeliveryMode,
		CorrelationId: d.CorrelationId, ReplyTo: d.ReplyTo,
		MessageId: d.MessageId, Timestamp: d.Timestamp, Type: d.Type, Body: d.Body,
	}
	time.AfterFunc(ignoreDelay(int(n)), func() {
		err := c.pub.Publish(transport.Message{Exchange: d.Exchange, Key: d.RoutingKey, Deadline: req.deadline, Publishing: again},
			func(o transport.Outcome) { c.settle(req, o) })
		if err != nil {
			c.settle(req, transport.Abandoned)
		}
	})
}

// settle acks req once its reply is confirmed, or expired unsent (nobody
// waits for it any more), and rejects it if it was malformed; otherwise
// (refused, abandoned) it requeues the request for another try. A delivery
// from a channel lost since cannot be settled: the broker has requeued it
// already.
func (c *serverCodec) settle(req *request, o transport.Outcome) {
	defer c.inflight.Done()
	var err error
	switch {
	case req.bad:
		err = req.d.Reject(false)
	case o == transport.Acked || o == transport.Expired:
		err = req.d.Ack(false)
	default:
		err = req.d.Nack(false, true)
	}
	if err != nil {
		c.log.Debug("amqprpc: settling a request failed; the broker requeues it",
			"correlation_id", req.d.CorrelationId, "err", err)
	}
}

// closeWait bounds how long Close waits for the confirms of replies already
// published.
const closeWait = 30 * time.Second

// Close waits until every reply already written is confirmed and its request
// settled (at most closeWait), then stops consuming: deliveries not yet read
// go back to the queue. net/rpc's ServeCodec calls it once its handlers are
// done. It is idempotent.
func (c *serverCodec) Close() error {
	c.closeOnce.Do(func() {
		c.stop()
		settled := make(chan struct{})
		go func() { c.inflight.Wait(); close(settled) }()
		select {
		case <-settled:
		case <-time.After(closeWait):
			c.log.Warn("amqprpc: closing with replies still unconfirmed; their requests will be redelivered")
		}
		if c.release != nil {
			c.closeErr = c.release()
		}
	})
	return c.closeErr
}
