package amqprpc

import (
	"fmt"
	"net/rpc"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/codec"
)

// readReply turns delivery d into r; false means d was dropped.
func (c *clientCodec) readReply(d *amqp.Delivery, r *rpc.Response) bool {
	c.acks.add(d)
	seq, ok := parseCorrelationID(c.prefix, d.CorrelationId)
	var p *pendingCall
	if ok {
		p = c.take(seq)
	} else if gs, isGather := parseCorrelationID(c.gatherPrefix, d.CorrelationId); isGather {
		c.mu.Lock()
		g := c.gathers[gs]
		c.mu.Unlock()
		if g != nil {
			g.add(*d, nil)
			return false
		}
	}
	if p == nil {
		c.dropped.Add(1)
		c.log.Debug("amqprpc: dropped a reply that matches no pending call",
			"correlation_id", d.CorrelationId)
		return false
	}
	*r = rpc.Response{ServiceMethod: p.method, Seq: seq} // replies carry no type
	if text, isErr := remoteError(d); isErr {
		r.Error = text
		switch code, _ := d.Headers[headerErrorCode].(string); code {
		case codeNoRoute:
			// The server put the request back for another server, and
			// found its queue gone (see ErrIgnoreRequest).
			if err, ok := parseNoRoute(text); ok {
				c.finish(p, err, len(d.Body))
				return c.failReply(p, r, err)
			}
		case codeNotTaken:
			err := &notTakenError{text: text}
			c.finish(p, err, len(d.Body))
			return c.failReply(p, r, err)
		}
		c.finish(p, rpc.ServerError(text), len(d.Body))
		return c.now(p, r)
	}
	switch {
	case p.info == nil: // a plain net/rpc caller: decode in ReadResponseBody
		cd, err := c.replyCodec(d)
		c.finish(p, err, len(d.Body))
		if err != nil {
			r.Error = err.Error()
			return true
		}
		c.bodyCodec, c.body = cd, d.Body
		return true
	case p.reply == nil: // nothing to decode into
	default:
		if err := c.decodeReply(d, p.reply); err != nil {
			c.finish(p, err, len(d.Body))
			return c.failReply(p, r, err)
		}
	}
	c.finish(p, nil, len(d.Body))
	return c.now(p, r)
}

// now reports whether r, the completion of call p that readReply is
// returning, goes to net/rpc now: a call of Client's that is not attached
// yet gets it through attach instead (see callInfo).
func (c *clientCodec) now(p *pendingCall, r *rpc.Response) bool {
	if p.info == nil {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p.info.call != nil {
		return true
	}
	early := *r
	p.info.early, p.info.deferred = &early, true
	return false
}

// failReply makes r, the completion of call p that readReply is
// returning, a failure with err (see failure); false means it is deferred
// to attach.
func (c *clientCodec) failReply(p *pendingCall, r *rpc.Response, err error) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	f, now := c.failure(p.seq, p.info, err)
	r.Error = f.Error
	return now
}

// remoteError returns the error text a reply carries, if it carries one:
// an error header that is a non-empty string, or bytes (what pika sends
// for a Python bytes value). An error header that is empty or null (void)
// means success, as its absence does. Any other type (a number, a bool)
// is a failure whose text is its printed value; PROTOCOL.md asks servers
// for strings.
func remoteError(d *amqp.Delivery) (string, bool) {
	var text string
	switch e := d.Headers[headerError].(type) {
	case nil:
	case string:
		text = e
	case []byte:
		text = string(e)
	default:
		text = fmt.Sprint(e)
	}
	return text, text != ""
}

// replyCodec is the codec that decodes reply d, which must be within the
// body size limit.
func (c *clientCodec) replyCodec(d *amqp.Delivery) (codec.Codec, error) {
	if len(d.Body) > c.maxBody {
		return nil, fmt.Errorf("%w: %w: reply of %d bytes, over the limit of %d (WithMaxBodySize)", ErrBadReply, ErrTooLarge, len(d.Body), c.maxBody)
	}
	cd, ok := decoderFor(d.ContentType, c.codec)
	if !ok {
		return nil, fmt.Errorf("%w: unknown content type %q", ErrBadReply, d.ContentType)
	}
	return cd, nil
}

// decodeReply decodes reply d's body into reply.
func (c *clientCodec) decodeReply(d *amqp.Delivery, reply any) error {
	cd, err := c.replyCodec(d)
	if err != nil {
		return err
	}
	if err := cd.Unmarshal(d.Body, reply); err != nil {
		return fmt.Errorf("%w: %w", ErrBadReply, err)
	}
	return nil
}
