package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// request is a delivery taken from a request queue and not yet settled
// (acked, rejected or requeued).
type request struct {
	d        amqp.Delivery
	owner    *serverCodec
	codec    codec.Codec
	deadline time.Time   // see requestDeadline: its reply is worthless after it
	key      uint64      // in the server's dedupe; 0: none
	bad      bool        // malformed: reject rather than ack
	decoded  bool        // decode ran (on the handler's goroutine)
	answered atomic.Bool // respond ran

	// Telemetry (a Server's requests): the span, and the outcome that
	// respond saw, for endRequest.
	cs        callSpan
	errText   string
	errType   string // "": success
	replySize int    // < 0: no reply body

	resent bool // its reply was nacked once and sent again (see settle)
}

// next returns the next well-formed request that is not a duplicate. A
// malformed one is refused (an error reply where it has a reply address, and
// a reject without requeue); a duplicate waits for, or is answered again
// after, the run of its original (see answerAgain). It blocks until a request arrives, stop is called
// (io.EOF), the limit is reached (io.EOF) or the consumer ends for good
// (io.EOF, with lost set).
func (c *serverCodec) next() (*request, error) {
	for {
		for c.full() {
			// Calls whose args are still being decoded may turn out
			// malformed and not count: wait for them before stopping.
			if c.undecided.Load() == 0 {
				// The last call we may take is in: stop the broker from
				// sending more while the running ones are acked.
				c.cancel()
				return nil, io.EOF
			}
			select {
			case <-c.decided:
			case <-c.stopping:
				return nil, io.EOF
			}
		}
		if c.stopped() {
			return nil, io.EOF
		}
		select {
		case <-c.stopping:
			return nil, io.EOF
		case <-c.stream.Next():
			c.stream.Switch()
		case <-c.stream.Ended():
			c.lost = errConsumerEnded
			return nil, io.EOF
		case d, ok := <-c.stream.Deliveries():
			if !ok { // the channel was lost: the next one's deliveries follow
				c.stream.Lost()
				continue
			}
			c.gate.RLock()
			if c.stopped() { // d goes back with the channel
				c.gate.RUnlock()
				return nil, io.EOF
			}
			c.inflight.Add(1)
			c.gate.RUnlock()
			req := &request{d: d, owner: c, replySize: -1}
			c.acker.Take(&req.d)
			req.deadline = requestDeadline(d.Expiration, d.Timestamp, time.Now())
			if d.Redelivered {
				c.tel.count(context.Background(), c.tel.redeliveries, &req.d, false)
			}
			if reason := c.check(req); reason != "" {
				c.tel.note(&req.d, c.tel.refused, eventRefused, errors.New(reason))
				c.refuse(req, reason)
				continue
			}
			if !c.admit(req) {
				continue
			}
			c.take() // counted until decode finds otherwise
			return req, nil
		}
	}
}

// admit checks req against the calls the server has run recently; false
// means req is a duplicate, already answered again or parked behind its
// original.
func (c *serverCodec) admit(req *request) bool {
	if c.seen == nil {
		return true
	}
	key := c.seen.key(req)
	if key == 0 {
		return true
	}
	// Only the original holds the key: the entry is its to end (forget),
	// and a parked duplicate may be settled as soon as begin returns.
	verdict, r := c.seen.begin(key, req)
	if verdict != runIt {
		c.tel.note(&req.d, c.tel.duplicates, eventDuplicate, nil)
	}
	switch verdict {
	case answered:
		c.log.Debug("amqprpc: answering a duplicate of an answered request again", "correlation_id", req.d.CorrelationId, "kept", r != nil)
		c.answerAgain(req, r)
		return false
	case parked:
		c.log.Debug("amqprpc: a duplicate waits for its original", "correlation_id", req.d.CorrelationId)
		return false
	}
	req.key = key
	return true
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
	cd, ok := decoderFor(d.ContentType, c.custom)
	if !ok {
		return fmt.Sprintf("request has unknown content type %q", d.ContentType)
	}
	req.codec = cd
	return ""
}

// refuse answers a malformed request with an error reply, if it has a reply
// address, and rejects it without requeue (to the dead-letter exchange, if
// the queue has one), so it cannot loop. The caller has counted it in
// inflight.
func (c *serverCodec) refuse(req *request, reason string) {
	c.log.Warn("amqprpc: refused request", "reason", reason,
		"type", req.d.Type, "correlation_id", req.d.CorrelationId)
	req.bad = true
	req.answered.Store(true)
	if req.d.ReplyTo == "" || req.d.CorrelationId == "" {
		c.settle(req, transport.Acked, nil) // rejected: bad
		return
	}
	_ = c.publishReply(req, &reply{errText: "amqprpc: " + reason})
}

// answerAgain answers req, a duplicate of a call answered already, with
// the reply kept for that call, or, if it was not kept, with an error that
// says so; req is acked once that is confirmed. A fanout server acks it
// without a reply, as it did the original if it ignored it: CallAll counts
// replies per server, and a second one would count twice.
func (c *serverCodec) answerAgain(req *request, r *reply) {
	if c.names.fanout {
		c.settle(req, transport.Acked, nil)
		return
	}
	if r == nil {
		r = &reply{errText: "amqprpc: the call ran already, and its reply is no longer kept (a duplicate of an answered request)"}
	}
	_ = c.publishReply(req, r)
}

// decode decodes req's args into body; a nil body (net/rpc found no such
// method) discards them. Either way, or when the args do not decode, the
// call does not count as well-formed.
func (c *serverCodec) decode(req *request, body any) error {
	req.decoded = true
	if body == nil {
		c.decide(false)
		return nil
	}
	if err := req.codec.Unmarshal(req.d.Body, body); err != nil {
		req.bad = true
		c.decide(false)
		return fmt.Errorf("amqprpc: decoding args: %w", err)
	}
	c.decide(true)
	return nil
}

// respond publishes req's reply (errText, or body encoded in the request's
// codec) to the response exchange, routed by the request's reply_to. It
// does not wait for the broker: the request is acked once the reply is
// confirmed (see settle for the other outcomes), so a crash before that
// loses nothing. Only its first call per request does anything.
func (c *serverCodec) respond(req *request, errText string, body any) error {
	if !req.answered.CompareAndSwap(false, true) {
		return nil
	}
	if errText == ErrIgnoreRequest.Error() {
		c.ignore(req)
		return nil
	}
	if errText != "" {
		req.outcome(errText, "")
		return c.publishReply(req, &reply{errText: truncateError(errText)})
	}
	data, err := marshal(req.codec, body)
	switch {
	case err != nil:
		errText = truncateError("amqprpc: encoding reply: " + err.Error())
	case len(data) > c.maxBody:
		errText = fmt.Sprintf("amqprpc: reply of %d bytes exceeds the limit of %d (WithMaxBodySize)", len(data), c.maxBody)
	}
	if errText != "" {
		req.outcome(errText, "bad_reply")
		return c.publishReply(req, &reply{errText: errText})
	}
	req.replySize = len(data)
	return c.publishReply(req, &reply{body: data})
}

// outcome records that req is answered with errText, for its telemetry;
// errType "" picks the error.type from errText, unless one was set.
func (req *request) outcome(errText, errType string) {
	req.errText = errText
	switch {
	case errType != "":
		req.errType = errType
	case req.errType == "":
		req.errType = serverErrorType(req, errText)
	}
}

// echo answers req, a call of PingMethod, with its own body, in its own
// content type: no handler runs, and nothing is decoded.
func (c *serverCodec) echo(req *request) error {
	if !req.answered.CompareAndSwap(false, true) {
		return nil
	}
	req.replySize = len(req.d.Body)
	return c.publishReply(req, &reply{body: req.d.Body})
}

// maxErrorText is the longest error text a reply carries, in bytes: it
// travels in a header, and all headers must fit one frame (see
// transport.MaxHeaderFrame).
const maxErrorText = 16 << 10

// truncateError cuts text to maxErrorText bytes, on a UTF-8 boundary, and
// says so.
func truncateError(text string) string {
	if len(text) <= maxErrorText {
		return text
	}
	const mark = " … (truncated)"
	cut := maxErrorText - len(mark)
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return text[:cut] + mark
}

// marshal encodes body with cd; a panic in user encoding code (a
// MarshalJSON, an EncodeMsgpack) becomes an error.
func marshal(cd codec.Codec, body any) (data []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return cd.Marshal(body)
}

// publishReply sends r, the reply of req, and settles req once the broker
// confirms it.
func (c *serverCodec) publishReply(req *request, r *reply) error {
	msg := amqp.Publishing{
		CorrelationId: req.d.CorrelationId,
		DeliveryMode:  req.d.DeliveryMode, // persistent requests get persistent replies
		Body:          r.body,
	}
	if req.codec != nil { // nil: the request's content type was unknown
		msg.ContentType = req.codec.ContentType()
	}
	if r.errText != "" {
		msg.Headers = amqp.Table{headerError: r.errText}
		if r.code != "" {
			msg.Headers[headerErrorCode] = r.code
		}
	}
	// Replies only ever go to this namespace's response exchange: reply_to
	// is a routing key there, whatever it says. A reply is worth no more
	// than its request: one that would leave after the request's deadline
	// is dropped unsent. One sent carries no expiration: it goes to the
	// client's own queue, whose client drops it if late (or which expires
	// with its client), and a per-message TTL was the costliest broker
	// feature in the benchmark (the floor with the same features made 9%
	// more calls/s without it, the broker spending 14 us less per call).
	err := c.pub.Publish(transport.Message{Exchange: c.responseExchange, Key: req.d.ReplyTo, Deadline: req.deadline, NoExpiration: true, Publishing: msg},
		func(o transport.Outcome) { c.settle(req, o, r) })
	switch {
	case errors.Is(err, transport.ErrTooLong):
		c.settle(req, transport.Failed, r) // it would fail the same way again
	case err != nil:
		c.settle(req, transport.Abandoned, r) // closed: the request goes back
	}
	return err
}

// replyResendDelay is how long a server waits before it sends a reply
// the broker nacked once more.
const replyResendDelay = time.Second

// settle settles req by the outcome o of its reply r (nil: none was
// sent). It acks req once r is confirmed, or expired unsent (nobody waits
// for it any more), and rejects it if it was malformed. A nacked r is sent
// once more after replyResendDelay. If the broker refused r for good (a reply queue full with overflow reject-publish, a
// reply over its max_message_size), req is rejected without requeue, to
// its queue's dead-letter exchange if it has one: requeued, it would run
// again and again. The caller is first sent a short error reply saying so,
// which may get through where r did not. If the publisher was closed first
// (the server is closing), req is requeued for another server. Duplicates parked behind req are answered with r, or
// requeued with it. A delivery from a channel lost since cannot be
// settled: the broker has requeued it already.
func (c *serverCodec) settle(req *request, o transport.Outcome, r *reply) {
	answered, reject := true, req.bad
	switch o {
	case transport.Acked, transport.Expired:
	case transport.Abandoned:
		answered = false
	default:
		if r != nil && o == transport.Nacked && !r.refused && !req.resent {
			// A reply queue on a node that is going down nacks for a
			// moment, and its client declares a new one elsewhere (seen
			// in the cluster tests): the reply itself gets one more try
			// before the caller is told it was refused, unless Shutdown
			// gives up meanwhile (Close waits for it: the request is in
			// flight).
			req.resent = true
			go c.resendReply(req, o, r)
			return
		}
		if r != nil && !r.refused {
			c.log.Warn("amqprpc: a reply was not sent; sending the caller an error instead", "why", notSent("it", o),
				"type", req.d.Type, "correlation_id", req.d.CorrelationId, "reply_to", req.d.ReplyTo)
			// A reply queue that refuses messages now (full, or on a node
			// that is down) may take them later: if the error is refused
			// too, the reply is kept for a copy of the call that the
			// client publishes again. A reply the broker closed the
			// channel over (too large) is not worth sending again.
			keep := r
			if o == transport.Failed || o == transport.TooLarge {
				keep = nil
			}
			// publishReply settles req again by this one's outcome.
			_ = c.publishReply(req, &reply{errText: "amqprpc: " + notSent("the reply", o), refused: true, keep: keep})
			return
		}
		c.log.Warn("amqprpc: the broker refused a reply; the request is rejected, not run again",
			"outcome", o.String(), "type", req.d.Type, "correlation_id", req.d.CorrelationId, "reply_to", req.d.ReplyTo)
		reject = true
		if r != nil {
			r = r.keep
		}
	}
	c.settleDelivery(&req.d, reject, answered)
	c.forget(req, answered, r)
	c.inflight.Done()
}

// resendReply publishes r again after replyResendDelay, or settles req by
// o at once if Shutdown gives up on the requests in flight meanwhile. (A
// func of its own: a closure in settle would put r on the heap for every
// request.)
func (c *serverCodec) resendReply(req *request, o transport.Outcome, r *reply) {
	t := time.NewTimer(replyResendDelay)
	defer t.Stop()
	select {
	case <-t.C:
		_ = c.publishReply(req, r)
	case <-c.abandon: // nil for NewServerCodec: the timer alone
		c.settle(req, o, r) // the error reply, now
	}
}

// settleDelivery settles one delivery with the broker: rejected without requeue
// if reject, acked if done (through the Acker, which may merge it with
// others), else requeued. A delivery from a channel lost since cannot be
// settled: the broker has requeued it already.
func (c *serverCodec) settleDelivery(d *amqp.Delivery, reject, done bool) {
	if done && !reject {
		c.acker.Ack(d)
		return
	}
	var err error
	if reject {
		err = d.Reject(false)
	} else {
		err = d.Nack(false, true)
	}
	c.acker.Settled(d)
	if err != nil {
		c.log.Debug("amqprpc: settling a request failed; the broker requeues it",
			"correlation_id", d.CorrelationId, "err", err)
	}
}

// forget ends req's entry in the dedupe, keeping r if answered, and
// settles the duplicates parked behind it: answered again with r if req
// was answered, requeued if not.
func (c *serverCodec) forget(req *request, answered bool, r *reply) {
	if req.key == 0 {
		return
	}
	for _, dup := range c.seen.finish(req.key, answered, r) {
		if answered {
			dup.owner.answerAgain(dup, r)
			continue
		}
		c.settleDelivery(&dup.d, false, false)
		dup.owner.inflight.Done()
	}
	req.key = 0
}
