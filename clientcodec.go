package amqprpc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/rpc"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/internal/transport"
)

// callArgs is what Client passes to rpc.Client.Go as a call's args, for
// WriteRequest to unwrap (as it unwraps To's routing): the caller's args,
// and what else the codec needs to know about the call. Per-call data
// thus reaches the codec with the call itself, as in net/rpc/jsonrpc.
type callArgs struct {
	args any
	info *callInfo
}

// callInfo is what Client hands the codec about the call it is sending,
// beyond what net/rpc passes to WriteRequest.
type callInfo struct {
	ctx   context.Context // the caller's: parent of the call's span
	args  any             // the caller's: attach puts them back in call.Args
	reply any             // decoded into while reading the header
	// deadline is the caller's own, which the caller enforces (CallContext);
	// zero means the codec applies the default call timeout.
	deadline time.Time
	seq      uint64 // set by WriteRequest, with sent
	sent     bool
	// err is the call's local failure (timeout, refusal, unreadable
	// reply), which net/rpc could only pass on as text that a handler
	// could imitate. The codec puts it in call.Error itself, under mu,
	// and has net/rpc complete the call as a success (whose empty body it
	// leaves as it is). Until Client has attached call (after net/rpc's Go
	// returned), any completion, a failure or a reply (early), is
	// deferred to attach, which first puts back call.Args.
	err      error
	early    *rpc.Response
	call     *rpc.Call
	deferred bool
}

// clientCodec is the rpc.ClientCodec behind Client; see NewClientCodec.
type clientCodec struct {
	names
	replyTo  string // the client id
	prefix   string // of every correlation id: random, ends in "."
	codec    codec.Codec
	maxBody  int // of requests sent and replies read, in bytes
	timeout  time.Duration
	delivery uint8 // delivery mode of requests: transient or persistent
	log      *slog.Logger
	pub      publisher
	stream   *transport.Stream // the reply queue's deliveries
	release  func() error      // closes what the codec owns, once
	routes   routes            // Tune's functions, under their own lock
	acks     *replyAcker       // the replies read and not acked yet, under its own lock
	lookUps  *queueLookups     // for returned calls; nil: they fail at once
	dropped  atomic.Uint64     // replies dropped: unknown ids, duplicates, unreadable
	tel      *telemetry

	// queueLost is set when the reply queue may have lost replies: the
	// broker cancelled its consumer (the queue was deleted), it was gone
	// when the consumer came back, or its node is down. The reader then
	// publishes every pending call again once it consumes the new queue.
	queueLost *atomic.Bool

	synthReady chan struct{} // cap 1: synth gained an entry
	timerReset chan struct{} // cap 1: the timeout list's head changed
	closed     chan struct{}
	closeOnce  sync.Once
	closeErr   error
	wg         sync.WaitGroup // the timeout goroutine

	// Read side: net/rpc reads header and body pairs from one goroutine.
	body      []byte      // body still to decode in ReadResponseBody
	bodyCodec codec.Codec // its codec; nil: nothing to decode

	mu sync.Mutex
	// protects the fields below, and the err, early, call and deferred of
	// every callInfo
	eof        bool // the reader returned io.EOF: net/rpc fails what is left itself
	pending    map[uint64]*pendingCall
	timeouts   timeoutList
	synth      []rpc.Response // completions made up by the codec, to be read next
	heldLogged time.Time      // when a held call was logged last
	broadcasts                // CallAll's: its gathers
}

type clientCodecConfig struct {
	names
	clientID string
	opts     *options
	pub      publisher
	stream   *transport.Stream
	lost     *atomic.Bool // see clientCodec.queueLost
	lookUps  *queueLookups
	tel      *telemetry
	release  func() error
}

func newClientCodec(cfg clientCodecConfig) *clientCodec {
	c := &clientCodec{
		names:      cfg.names,
		replyTo:    cfg.clientID,
		prefix:     randomHex(6) + ".",
		broadcasts: broadcasts{gatherPrefix: randomHex(6) + ".", gathers: make(map[uint64]*gather)},
		codec:      cfg.opts.codec,
		maxBody:    cfg.opts.maxBody,
		timeout:    cfg.opts.callTimeout,
		delivery:   deliveryMode(cfg.opts.persistent),
		log:        cfg.opts.logger,
		pub:        cfg.pub,
		stream:     cfg.stream,
		queueLost:  cfg.lost,
		lookUps:    cfg.lookUps,
		tel:        cfg.tel,
		release:    cfg.release,
		synthReady: make(chan struct{}, 1),
		timerReset: make(chan struct{}, 1),
		closed:     make(chan struct{}),
		pending:    make(map[uint64]*pendingCall),
		acks:       newReplyAcker(),
	}
	if c.queueLost == nil {
		c.queueLost = new(atomic.Bool)
	}
	if c.tel == nil {
		c.tel = newTelemetry(cfg.opts, false)
	}
	c.wg.Add(1)
	go c.expire()
	return c
}

// WriteRequest publishes one call. net/rpc serialises calls to it. It returns
// once the request is written to the connection; the broker's confirm is
// handled later, so a slow confirm never holds up other callers.
//
// A call that cannot be sent fails at once, and alone: a method name or
// routing key over AMQP's limits (ErrTooLong), args that do not encode, or
// encode larger than the limit (ErrTooLarge). For plain net/rpc users
// WriteRequest returns the error and net/rpc completes the call with it;
// a call of Client's fails through attach instead, which first puts back
// its Args (net/rpc would complete it before Go returns).
func (c *clientCodec) WriteRequest(r *rpc.Request, body any) error {
	err := c.writeRequest(r, body)
	ca, ok := body.(*callArgs)
	if err == nil || !ok {
		return err
	}
	c.mu.Lock()
	ca.info.seq, ca.info.sent = r.Seq, true
	c.failure(r.Seq, ca.info, err) // info.call is nil: deferred to attach
	c.mu.Unlock()
	return nil
}

func (c *clientCodec) writeRequest(r *rpc.Request, body any) error {
	p := &pendingCall{seq: r.Seq, method: r.ServiceMethod}
	args := body
	var ttl time.Time
	ctx := context.Background()
	if ca, ok := body.(*callArgs); ok { // from Client; plain net/rpc users send args alone
		args, p.info, p.reply, ttl = ca.args, ca.info, ca.info.reply, ca.info.deadline
		ctx = ca.info.ctx
	}
	p.cs = c.tel.startCall(ctx, c.tel.method(r.ServiceMethod, true))
	if ttl.IsZero() && c.timeout > 0 {
		ttl = time.Now().Add(c.timeout)
		p.deadline = ttl
	}
	p.ttl = ttl
	key, data, err := c.encodeArgs(r.ServiceMethod, args)
	if err != nil {
		c.finish(p, err, -1)
		return err
	}
	p.key, p.body = key, data
	c.describeSend(&p.cs, key, c.prefix, r.Seq, len(data))
	if p.info != nil {
		p.info.seq, p.info.sent = r.Seq, true
	}

	c.mu.Lock()
	if c.eof || c.isClosed() {
		// Close won the race: net/rpc fails the calls it knows of, and
		// the codec's telemetry of those it has, by now.
		c.mu.Unlock()
		c.finish(p, rpc.ErrShutdown, -1)
		return rpc.ErrShutdown
	}
	c.pending[r.Seq] = p
	if !p.deadline.IsZero() {
		if c.timeouts.tail == nil {
			defer signal(c.timerReset)
		}
		c.timeouts.push(p)
	}
	c.mu.Unlock()

	if err := c.publish(p); err != nil {
		if errors.Is(err, transport.ErrClosed) {
			err = rpc.ErrShutdown
		}
		c.forget(r.Seq, err)
		return err
	}
	return nil
}

// encodeArgs routes and encodes the args of a call of serviceMethod: the
// routing key (To's, Tune's or "") and the body, which must be within the
// body size limit (ErrTooLarge).
func (c *clientCodec) encodeArgs(serviceMethod string, args any) (key string, data []byte, err error) {
	key, args = c.routes.route(serviceMethod, args)
	data, err = c.codec.Marshal(args)
	switch {
	case err != nil:
		return "", nil, fmt.Errorf("amqprpc: encoding args of %s: %w", serviceMethod, err)
	case len(data) > c.maxBody:
		return "", nil, fmt.Errorf("%w: args of %s encode to %d bytes, over the limit of %d (WithMaxBodySize)", ErrTooLarge, serviceMethod, len(data), c.maxBody)
	}
	return key, data, nil
}

// describeSend records the request of a call, size bytes of body sent
// with key and the correlation id of prefix and seq (made only if the span
// records: it costs an allocation), on its span, and its size in the
// metrics.
func (c *clientCodec) describeSend(cs *callSpan, key, prefix string, seq uint64, size int) {
	c.tel.recordRequestSize(cs.ctx, cs.m, size)
	if cs.span.IsRecording() {
		id := correlationID(prefix, seq)
		cs.span.SetAttributes(messageAttrs(cs.m, c.requestExchange, key, id, id, size, semconv.MessagingOperationTypeSend,
			semconv.MessagingClientID(c.replyTo))...)
	}
}

// publish sends pending call p's request; its outcome may end the call.
func (c *clientCodec) publish(p *pendingCall) error {
	seq, key := p.seq, p.key
	msg := c.request(key, correlationID(c.prefix, seq), p.method, p.body, p.ttl)
	c.tel.inject(p.cs.ctx, &msg.Publishing)
	if p.cs.span.IsRecording() {
		msg.Retried = func() { p.cs.event(eventRetried, retryChannelLost) }
	}
	return c.pub.Publish(msg, func(o transport.Outcome) {
		p.cs.outcomeEvent(o)
		switch o {
		case transport.Acked:
			p.acked.Store(true)
		case transport.Returned, transport.Nacked:
			go c.refused(p, o) // it asks the broker: not on the publisher's goroutine
			return
		}
		// On Close (ErrShutdown) net/rpc fails the call itself.
		if err := c.outcomeError(o, key, ""); err != nil && err != rpc.ErrShutdown {
			c.fail(seq, err)
		}
	})
}

// republish sends every pending call's request again, after the reply
// queue was lost with any replies in it. A server that answered one
// already answers the copy from its reply cache (see dedupe); replies that
// do arrive twice are dropped.
func (c *clientCodec) republish() {
	c.mu.Lock()
	calls := make([]*pendingCall, 0, len(c.pending))
	for _, p := range c.pending {
		calls = append(calls, p)
	}
	c.mu.Unlock()
	slices.SortFunc(calls, func(a, b *pendingCall) int { return cmp.Compare(a.seq, b.seq) })
	c.log.Warn("amqprpc: the reply queue was lost; publishing the pending calls again", "calls", len(calls))
	for _, p := range calls {
		p.cs.event(eventRetried, retryReplyQueueLost)
		switch err := c.publish(p); {
		case errors.Is(err, transport.ErrClosed):
			return // net/rpc fails them all with ErrShutdown
		case err != nil:
			c.fail(p.seq, err)
		}
	}
}

// request is the message that carries a call, direct (key) or broadcast.
// It is mandatory: a request no queue takes comes back, and fails the call
// at once instead of vanishing. The publisher turns deadline into the
// expiration when it sends it.
func (c *clientCodec) request(key, id, serviceMethod string, body []byte, deadline time.Time) transport.Message {
	return transport.Message{
		Exchange:  c.requestExchange,
		Key:       key,
		Mandatory: true,
		Deadline:  deadline,
		Publishing: amqp.Publishing{
			ContentType:   c.codec.ContentType(),
			DeliveryMode:  c.delivery,
			CorrelationId: id,
			MessageId:     id,
			ReplyTo:       c.replyTo,
			Type:          serviceMethod,
			Body:          body,
		},
	}
}

// outcomeError is the error a request's publishing outcome ends its call
// with, or nil when the call waits on for its reply (Acked) or its deadline
// ends it (Expired). A returned request names its routing key, or for a
// broadcast its fanout exchange. After Close it is rpc.ErrShutdown.
func (c *clientCodec) outcomeError(o transport.Outcome, key, fanout string) error {
	switch o {
	case transport.Nacked:
		return ErrRefused
	case transport.Returned:
		return &noRouteError{key: key, fanout: fanout}
	case transport.Failed:
		return errAbandoned
	case transport.TooLarge:
		return errOverFrameMax
	case transport.Abandoned:
		return rpc.ErrShutdown // the publisher stops only with Close
	}
	return nil
}

// deliveryMode is the AMQP delivery mode for persistent or transient
// messages. Transient is no delivery mode at all, which means the same to
// the broker (AMQP 0-9-1, basic properties: non-persistent unless 2) and
// spares encoding and decoding the property in every request and reply.
func deliveryMode(persistent bool) uint8 {
	if persistent {
		return amqp.Persistent
	}
	return 0
}

// isClosed reports whether Close has begun.
func (c *clientCodec) isClosed() bool { return closed(c.closed) }

// take removes seq from the pending calls and returns it, or nil when the
// call was already completed (replied to, timed out or cancelled).
func (c *clientCodec) take(seq uint64) *pendingCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeLocked(seq)
}

func (c *clientCodec) takeLocked(seq uint64) *pendingCall {
	p := c.pending[seq]
	if p != nil {
		delete(c.pending, seq)
		c.timeouts.remove(p)
	}
	return p
}

// forget drops a call whose request was never sent, because of err.
func (c *clientCodec) forget(seq uint64, err error) {
	if p := c.take(seq); p != nil {
		c.finish(p, err, -1)
	}
}

// finish ends the telemetry of call p, taken from pending (so once), with
// err (nil: success) and the size of its reply (< 0: none).
func (c *clientCodec) finish(p *pendingCall, err error, replySize int) {
	c.tel.end(&p.cs, p.cs.m, err, errorTypeOf(err), replySize)
}

// fail completes seq with a local failure, if it is still pending; it
// reports whether it did. net/rpc receives the completion through the next
// ReadResponseHeader and frees the call.
func (c *clientCodec) fail(seq uint64, err error) bool {
	c.mu.Lock()
	p := c.takeLocked(seq)
	var queued bool
	if p != nil {
		err, queued = c.failLocked(p, err)
	}
	c.mu.Unlock()
	if queued {
		signal(c.synthReady)
	}
	if p != nil {
		c.finish(p, err, -1)
	}
	return p != nil
}

// failLocked queues the completion of p, taken from pending, with err (see
// failure); it returns the error the call ends with, and whether it was
// queued now. The caller finishes p's telemetry, after unlocking: ending
// a span may export it.
func (c *clientCodec) failLocked(p *pendingCall, err error) (error, bool) {
	err = endedWaiting(p, err)
	r, now := c.failure(p.seq, p.info, err)
	if now {
		c.synth = append(c.synth, r)
	}
	return err, now
}

// failure returns the completion of call seq failing with err. A call made
// through Client (info) gets err itself, as its Error (see callInfo); only
// plain net/rpc users get its text. now is false when the completion is
// deferred to attach.
func (c *clientCodec) failure(seq uint64, info *callInfo, err error) (r rpc.Response, now bool) {
	text := err.Error()
	if info != nil {
		info.err = err
		if info.call == nil {
			info.deferred = true
			return r, false
		}
		if !c.eof { // after EOF net/rpc writes call.Error itself
			info.call.Error, text = err, ""
		}
	}
	return rpc.Response{Seq: seq, Error: text}, true
}

// attach tells the codec the rpc.Call of a call made through Client, once
// net/rpc's Go has returned it, and delivers a failure that came first.
func (c *clientCodec) attach(info *callInfo, call *rpc.Call) {
	c.mu.Lock()
	if !c.eof {
		// After EOF net/rpc fails the call itself, maybe already: the
		// envelope stays in call.Args rather than race with its reader.
		call.Args = info.args
	}
	info.call = call
	queued := info.deferred
	switch {
	case queued && info.early != nil:
		c.synth = append(c.synth, *info.early)
	case queued:
		r, _ := c.failure(info.seq, info, info.err) // call is set: not deferred again
		c.synth = append(c.synth, r)
	}
	c.mu.Unlock()
	if queued {
		signal(c.synthReady)
	}
}

// cancel fails call seq, whose caller gave up because of cause (its
// context's error; see CallContext). It returns the error the caller
// returns, cause or an unavailableError, and whether the call was still
// pending.
func (c *clientCodec) cancel(seq uint64, cause error) (error, bool) {
	c.mu.Lock()
	p := c.takeLocked(seq)
	var queued bool
	if p != nil {
		cause = endedWaiting(p, cause)
		_, queued = c.failLocked(p, errCanceled)
	}
	c.mu.Unlock()
	if queued {
		signal(c.synthReady)
	}
	if p != nil {
		c.finish(p, cause, -1)
	}
	return cause, p != nil
}

// ReadResponseHeader returns the next completion: a reply from the reply
// queue or a failure the codec made up (timeout, cancel, refusal). Replies
// that match no pending call (unknown or forged ids, duplicates, replies to
// calls that already timed out) are acked, counted and dropped, never
// returned as an error: an error here would shut the whole rpc.Client down.
// It blocks until a completion arrives or the codec is closed (io.EOF).
func (c *clientCodec) ReadResponseHeader(r *rpc.Response) error {
	c.bodyCodec, c.body = nil, nil
	for {
		c.mu.Lock()
		if len(c.synth) > 0 {
			*r = c.synth[0]
			c.synth[0] = rpc.Response{}
			c.synth = c.synth[1:]
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()

		ackDue := c.acks.due() // armed while replies wait for their ack
		select {
		case d, ok := <-c.stream.Deliveries():
			if !ok { // the channel was lost: the next one's replies follow
				c.stream.Lost()
				c.acks.lost()
				continue
			}
			if c.readReply(&d, r) {
				return nil
			}
		case <-ackDue:
			c.acks.flush()
		case <-c.stream.Next():
			c.stream.Switch()
			if c.queueLost.Swap(false) {
				c.republish()
			}
		case <-c.stream.Ended():
			return c.end()
		case <-c.synthReady:
		case <-c.closed:
			c.acks.flush()
			return c.end()
		}
	}
}

// end records that the reader is done: net/rpc fails every call left with
// rpc.ErrShutdown, and failLocked leaves their Error to it.
func (c *clientCodec) end() error {
	c.mu.Lock()
	c.eof = true
	left := c.pending // taken, as take would: nothing completes them again
	c.pending = make(map[uint64]*pendingCall)
	c.timeouts = timeoutList{}
	c.mu.Unlock()
	for _, p := range left {
		c.finish(p, rpc.ErrShutdown, -1)
	}
	return io.EOF
}

// ReadResponseBody decodes the reply body that ReadResponseHeader left, if
// any; a nil body discards it. Calls made through Client were decoded while
// reading the header, so a bad body fails only that call; for a plain
// rpc.Client an error here shuts the client down, as with every net/rpc codec.
func (c *clientCodec) ReadResponseBody(body any) error {
	cd, data := c.bodyCodec, c.body
	c.bodyCodec, c.body = nil, nil
	if cd == nil || body == nil {
		return nil
	}
	return cd.Unmarshal(data, body)
}

// Close stops the codec: reads return io.EOF (so net/rpc fails pending calls
// with rpc.ErrShutdown), the timeout goroutine ends and the codec's channels
// close. It is idempotent and waits for the codec's goroutines.
func (c *clientCodec) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.wg.Wait()
		c.acks.flush() // before the channel closes, or the broker requeues them
		if c.release != nil {
			c.closeErr = c.release()
		}
	})
	return c.closeErr
}

// pendingCount is the number of calls the codec tracks, for tests.
func (c *clientCodec) pendingCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pending)
}
