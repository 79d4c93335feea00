package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Outcome is the broker's verdict on one published message.
type Outcome int

const (
	// Acked: the broker took responsibility for the message.
	Acked Outcome = iota
	// Returned: the message was mandatory and no queue was bound for its
	// routing key; the broker dropped it.
	Returned
	// Nacked: the broker refused the message.
	Nacked
	// Abandoned: the publisher was closed before the broker answered. The
	// message may or may not have reached the broker.
	Abandoned
	// Expired: its Deadline passed before it could be sent.
	Expired
	// Failed: maxTries channels closed while the message was in flight
	// alone: the broker refuses it (too large, say). It may or may not have reached the
	// broker; sending it again would fail the same way.
	Failed
	// TooLarge: the message's properties do not fit one frame of the
	// frame_max its connection negotiated, so it was not sent: the broker
	// would close the connection over it (AMQP 0-9-1 §4.2.3), and with it
	// every other channel. Check bounds them at MaxHeaderFrame already, so
	// only a broker configured with a frame_max under 64 KiB gets here.
	TooLarge
)

var outcomeNames = [...]string{"acked", "returned", "nacked", "abandoned", "expired", "failed", "too large for frame_max"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "outcome " + strconv.Itoa(int(o))
}

// Confirmed receives a message's Outcome. It runs on the publisher's goroutine
// and must not block.
type Confirmed func(Outcome)

// Message is one publishing with its destination.
type Message struct {
	Exchange, Key string
	// Mandatory messages that no queue takes come back as Returned. A
	// return is matched to its message by reply_to, correlation_id and
	// message_id: mandatory messages in flight at once must differ in one
	// of them, or be copies of one message (which may then swap outcomes).
	Mandatory bool
	// Deadline, if set, is when the message stops being worth sending: a
	// message still waiting then is dropped (Expired), and the Expiration
	// of one sent is the time left until it, computed when it is written,
	// with its Timestamp set to that moment.
	Deadline time.Time
	// NoExpiration keeps Deadline from setting Expiration and Timestamp:
	// the message is still dropped if its deadline passes before it is
	// written, but once sent the broker keeps it until it is consumed.
	NoExpiration bool
	// Retried, if set, is called (on the publisher's goroutine; it must not
	// block) when the channel was lost before the broker confirmed the
	// message, which is then sent again.
	Retried func()
	amqp.Publishing
}

type entry struct {
	Message
	done    Confirmed
	dc      *amqp.DeferredConfirmation // on the channel it was last sent on
	tries   int                        // channels lost while it was in flight alone
	suspect bool                       // unconfirmed when a channel was lost: sent alone until confirmed
	props   int                        // size of its properties, as Check counts them
}

// maxTries bounds how often a channel may close while a message is in
// flight alone: a message the broker closes channels over (too large, say)
// must not block the ones behind it forever. When a channel closes, the
// broker may not have confirmed even the messages it took, so which one it
// refused is unknown: the messages left unconfirmed are sent again one at a
// time, each once the one before it is confirmed, and a channel that closes
// then counts a try for the one in flight. The others are not given up
// with it.
const maxTries = 10

// Publisher publishes on a confirm-mode channel of a Conn and survives its
// loss. Publish only queues the message: one goroutine writes the queue to
// the channel and hands each broker confirm to its message's callback, so
// no caller ever waits for the broker, even when it blocks publishers.
// Messages not confirmed when the channel closes are sent again on the next
// one (the broker may then see them twice); messages published while the
// connection is down wait for it. It is safe for concurrent use.
type Publisher struct {
	conn  *Conn
	log   *slog.Logger
	setup func(*amqp.Channel) error
	burst func() (end func()) // brackets bursts of callbacks; may be nil
	ctx   context.Context     // ends with Close
	stop  context.CancelFunc
	wake  chan struct{} // capacity 1: queued gained messages
	done  chan struct{} // closed when run has ended

	mu sync.Mutex
	// protects queued, spare and closed
	queued []*entry
	spare  []*entry // an empty array for queued to take after a batch
	closed bool
}

// NewPublisher opens its first channel on conn before returning. setup
// (which may be nil) runs on every new channel, before anything is sent on
// it: it declares the exchanges the messages go to.
//
// burst, if not nil, is called before a burst of confirms is handed out to
// the callbacks, and the func it returns after: the callbacks' acks can be
// gathered in between (see Acker and Conn.Cork).
func NewPublisher(conn *Conn, log *slog.Logger, setup func(*amqp.Channel) error, burst func() (end func())) (*Publisher, error) {
	ctx, stop := context.WithCancel(context.Background())
	p := &Publisher{conn: conn, log: log, setup: setup, burst: burst, ctx: ctx, stop: stop,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
	l, err := p.open(ctx)
	if err != nil {
		stop()
		return nil, err
	}
	go p.run(l)
	return p, nil
}

// confirmChannel is one confirm-mode channel with its notification streams.
// Confirms are read from each message's DeferredConfirmation, which
// amqp091-go makes for every publishing anyway: a NotifyPublish listener
// would cost a timer per confirm (amqp091-go's notifyAll), 12 allocations
// per call in the benchmark.
type confirmChannel struct {
	ch       *amqp.Channel
	frameMax int              // negotiated by its connection, in bytes; 0: none
	closed   chan *amqp.Error // gets an error, or is closed, when ch is gone
	returns  chan amqp.Return
}

func (p *Publisher) open(ctx context.Context) (*confirmChannel, error) {
	ch, frameMax, err := p.conn.channel(ctx)
	if err != nil {
		return nil, err
	}
	if p.setup != nil {
		if err := p.setup(ch); err != nil {
			_ = ch.Close()
			return nil, err
		}
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("amqprpc: confirm mode: %w", err)
	}
	return &confirmChannel{
		ch:       ch,
		frameMax: frameMax,
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
		returns:  ch.NotifyReturn(make(chan amqp.Return, 1024)),
	}, nil
}

// Publish queues m for sending and returns at once; done (which may be nil)
// later gets the broker's verdict, or ours (Expired, TooLarge for the
// connection it would go on). It returns an error, and done is not
// called, for a message that cannot be sent at all (see Check: a name over
// AMQP's limits, invalid headers) and after Close (ErrClosed).
func (p *Publisher) Publish(m Message, done Confirmed) error {
	props, err := Check(&m)
	if err != nil {
		return err
	}
	e := &entry{Message: m, done: done, props: props}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.queued = append(p.queued, e)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return nil
}

// run is the publisher's goroutine: it serves one channel at a time and,
// when one is lost, opens the next and sends again whatever was unconfirmed.
func (p *Publisher) run(l *confirmChannel) {
	defer close(p.done)
	var wait time.Duration // before reopening after a channel that failed fast
	var rl retryLog
	for {
		opened := time.Now()
		p.requeue(p.serve(l))
		_ = l.ch.Close()

		// A channel the broker closes right after opening (a message it
		// refuses, a missing exchange) must not make us spin.
		if time.Since(opened) < time.Second {
			wait = min(max(2*wait, 50*time.Millisecond), time.Second)
		} else {
			wait = 0
		}
		if l = p.reopen(wait, &rl); l == nil {
			p.abandon()
			return
		}
	}
}

// requeue puts the messages a lost channel left unconfirmed back at the
// head of the queue, as suspects (sent one at a time), and gives up on
// those that were in flight alone maxTries times.
func (p *Publisher) requeue(unconfirmed []*entry) {
	if len(unconfirmed) == 1 && unconfirmed[0].suspect && p.ctx.Err() == nil { // our own Close is no refusal
		unconfirmed[0].tries++
	}
	var failed []*entry
	kept := unconfirmed[:0]
	for _, e := range unconfirmed {
		e.suspect = true
		if e.tries >= maxTries {
			failed = append(failed, e)
		} else {
			kept = append(kept, e)
			if e.Retried != nil && p.ctx.Err() == nil {
				e.Retried()
			}
		}
	}
	p.mu.Lock()
	p.queued = append(kept, p.queued...)
	p.mu.Unlock()
	for _, e := range failed {
		p.log.Warn("amqprpc: giving up on a message that keeps losing its channel",
			"exchange", e.Exchange, "key", e.Key, "correlation_id", e.CorrelationId, "size", len(e.Body), "tries", e.tries)
		if e.done != nil {
			e.done(Failed)
		}
	}
}

// reopen opens the next channel, first after wait, and then with backoff
// while opening fails; it returns nil once the publisher is closed.
func (p *Publisher) reopen(wait time.Duration, rl *retryLog) *confirmChannel {
	for {
		if wait > 0 {
			select {
			case <-p.ctx.Done():
			case <-time.After(wait):
			}
		}
		if p.ctx.Err() != nil {
			return nil
		}
		// While the connection is down, look at the queue every
		// expiryScan: nothing else drops what expires meanwhile.
		p.dropExpired()
		ctx, cancel := context.WithTimeout(p.ctx, expiryScan)
		l, err := p.open(ctx)
		cancel()
		switch {
		case err == nil:
			rl.ok()
			return l
		case errors.Is(err, ErrClosed) || p.ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			wait = 0 // still down: scan and wait again
		default:
			rl.failed(p.log, "amqprpc: reopening the publish channel failed; retrying", "err", err)
			wait = min(max(2*wait, 50*time.Millisecond), time.Second)
		}
	}
}

// serve sends queued messages on l and delivers l's confirms until l closes
// or the publisher is closed; it returns the messages left unconfirmed, in
// the order they were sent. Each message has its own confirmation (by
// delivery tag), so one lost confirm cannot shift the others; they are
// handed out in the order the messages were sent, as amqp091-go orders
// them for NotifyPublish.
func (p *Publisher) serve(l *confirmChannel) (unconfirmed []*entry) {
	s := &session{p: p, l: l, wake: p.wake, stopping: p.ctx.Done(), returns: l.returns}
	p.nudge() // send what was queued before l was up
	for {
		select {
		case <-s.stopping:
			s.close()
		case <-s.wake:
			// Let the goroutines that are ready to publish (the callers
			// that woke us, and those behind them) queue their messages
			// first: a bigger batch is fewer writes for us and fewer
			// reads for the broker. With 64 callers it gained 2-6% calls/s
			// against the floor with the same features (two alternating
			// A/B runs); with one caller, nothing is ready and it returns
			// at once.
			runtime.Gosched()
			s.sendBatch()
		case <-s.headDone():
			s.confirmBurst()
		case <-l.closed:
			s.waitClosed()
			s.confirmBurst() // those the broker confirmed before the end
			s.takeAcked()    // and acked out of order
			return s.unconfirmed()
		}
	}
}

// session is serve's state for one channel: the messages sent on it and
// not yet confirmed, in the order they were sent, and the returns not yet
// matched to a confirm. It belongs to the publisher's goroutine, as
// amqp091-go's confirms type belongs to its channel.
type session struct {
	p        *Publisher
	l        *confirmChannel
	sent     []*entry          // in tag order
	lost     bool              // l is gone: what is left in sent is unconfirmed
	returned map[returnKey]int // returns not yet matched to a confirm

	wake     chan struct{}    // p.wake, or nil while in flight is full, the channel gone, or closing
	stopping <-chan struct{}  // p's Close; nil once handled
	returns  chan amqp.Return // l's; nil once it closed
	closed   chan struct{}    // closed once Close's channel.close is done; nil before
}

// close closes the channel on the publisher's Close, and meanwhile keeps
// handing out the confirms of what was sent until it is closed.
func (s *session) close() {
	s.wake, s.stopping = nil, nil
	s.closed = make(chan struct{})
	go func() { _ = s.l.ch.Close(); close(s.closed) }()
}

// waitClosed waits for close's channel.close, if it began.
func (s *session) waitClosed() {
	if s.closed != nil {
		<-s.closed
	}
}

// unconfirmed returns the messages sent and not confirmed, in the order
// they were sent.
func (s *session) unconfirmed() []*entry {
	out := slices.Clone(s.sent)
	for _, e := range out {
		e.dc = nil
	}
	return out
}

// headDone is ready when the oldest message in flight has its confirm (or
// was nacked by the channel's loss); nil when none is in flight.
func (s *session) headDone() <-chan struct{} {
	if len(s.sent) == 0 || s.lost {
		return nil
	}
	return s.sent[0].dc.Done()
}

// sendBatch sends what the queue holds, up to maxInFlight in flight.
func (s *session) sendBatch() {
	batch, whole := s.takeBatch()
	now := time.Now()
	uncork := s.p.conn.Cork() // one write for the whole batch
	skipped := 0
	for i, e := range batch {
		if !s.setExpiration(e, now) {
			skipped++
			continue
		}
		if !fitsFrame(e.props, s.l.frameMax) {
			if e.done != nil {
				e.done(TooLarge)
			}
			skipped++
			continue
		}
		dc, err := s.l.ch.PublishWithDeferredConfirm(e.Exchange, e.Key, e.Mandatory, false, e.Publishing)
		if err != nil {
			// The channel is gone: keep the rest for the next one, and
			// take the confirms still buffered until the stream ends. (A
			// message amqp091-go cannot encode also lands here, and
			// costs the connection: Publish's Check keeps those out, and
			// maxTries bounds the rest.)
			s.p.mu.Lock()
			s.p.queued = append(batch[i:], s.p.queued...) // may reuse batch's array
			s.p.mu.Unlock()
			s.wake, whole = nil, false
			break
		}
		e.dc = dc
		s.sent = append(s.sent, e)
	}
	uncork()
	if skipped > 0 && s.wake != nil {
		// Messages left unsent (expired, too large) did not take the
		// room the batch was sized for: the queue's next ones may go.
		s.p.nudge()
	}
	if whole {
		clear(batch) // the entries now live in sent, or are done
		s.p.mu.Lock()
		s.p.spare = batch[:0]
		s.p.mu.Unlock()
	}
	if len(s.sent) >= maxInFlight {
		s.wake = nil // until confirms make room
	}
}

// takeBatch takes the messages to send now off the queue: as many as fit
// in flight, or while suspects lead the queue, one alone. whole says that
// the batch is the queue's whole array, which the queue then gives up for
// the spare one: Publish appends without allocating a new array every few
// batches, and sendBatch gives it back as the spare once sent.
func (s *session) takeBatch() (batch []*entry, whole bool) {
	p := s.p
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queued), maxInFlight-len(s.sent))
	if n > 0 && p.queued[0].suspect { // probing
		n = 0
		if len(s.sent) == 0 {
			n = 1 // alone; its confirm wakes us for the next
		}
	}
	batch = p.queued[:n:n]
	whole = n > 0 && n == len(p.queued)
	if whole {
		p.queued, p.spare = p.spare[:0], nil
	} else {
		p.queued = p.queued[n:]
	}
	return batch, whole
}

// setExpiration sets e's Expiration from its Deadline, and its Timestamp,
// as of now, and reports whether it is still worth sending; one that is
// not is Expired.
func (s *session) setExpiration(e *entry, now time.Time) bool {
	if e.Deadline.IsZero() {
		return true
	}
	left := e.Deadline.Sub(now).Milliseconds()
	if left <= 0 {
		if e.done != nil {
			e.done(Expired)
		}
		return false
	}
	if e.NoExpiration {
		return true
	}
	e.Expiration = strconv.FormatInt(min(left, MaxExpiry), 10)
	e.Timestamp = now // with Expiration, the receiver can tell how long it waited
	return true
}

// confirmBurst hands out the confirms of the oldest messages in flight,
// as far as they have come, with the acks their callbacks send gathered
// into one write.
func (s *session) confirmBurst() {
	uncork := s.p.corkAcks()
	defer uncork()
	for len(s.sent) > 0 && !s.lost {
		e := s.sent[0]
		select {
		case <-e.dc.Done():
		default:
			return
		}
		ack := e.dc.Acked()
		if !ack && s.l.ch.IsClosed() {
			// amqp091-go nacks what is in flight when the channel
			// closes, after marking it closed: not the broker's nack
			// (a real one seen only now is taken for one of those, and
			// the message sent again). Acks are always the broker's:
			// once the channel's close is seen, takeAcked hands out
			// those behind, and the rest are sent again.
			s.lost = true
			return
		}
		s.sent[0] = nil
		s.sent = s.sent[1:]
		e.dc = nil
		s.confirm(e, ack)
	}
}

// takeAcked hands out the messages in flight that the broker acked, in
// any order, once the channel is lost; the others stay in sent, to be sent
// again.
func (s *session) takeAcked() {
	kept := s.sent[:0]
	for _, e := range s.sent {
		select {
		case <-e.dc.Done():
			if e.dc.Acked() {
				e.dc = nil
				s.confirm(e, true)
				continue
			}
		default:
		}
		kept = append(kept, e)
	}
	clear(s.sent[len(kept):])
	s.sent = kept
}

// confirm hands one broker confirm to its message's callback.
func (s *session) confirm(e *entry, ack bool) {
	s.takeReturns()
	if e.suspect { // cleared: the next may go
		e.suspect = false
		s.p.nudge()
	}
	wasReturned := s.wasReturned(e)
	if s.wake == nil && s.stopping != nil && !s.l.ch.IsClosed() && len(s.sent) < maxInFlight {
		s.wake = s.p.wake
		s.p.nudge()
	}
	if e.done == nil {
		return
	}
	switch {
	case !ack:
		e.done(Nacked)
	case wasReturned:
		e.done(Returned)
	default:
		e.done(Acked)
	}
}

// takeReturns records the returns buffered so far. A return precedes its
// message's ack on the wire, and amqp091-go dispatches both from one
// goroutine: by the ack, its return is already buffered.
func (s *session) takeReturns() {
	for s.returns != nil {
		select {
		case r, ok := <-s.returns:
			if !ok {
				s.returns = nil
				return
			}
			if s.returned == nil {
				s.returned = make(map[returnKey]int)
			}
			s.returned[returnKey{r.ReplyTo, r.CorrelationId, r.MessageId}]++
		default:
			return
		}
	}
}

// wasReturned reports whether mandatory message e came back, and if so
// counts its return as matched.
func (s *session) wasReturned(e *entry) bool {
	if !e.Mandatory || len(s.returned) == 0 {
		return false
	}
	k := returnKey{e.ReplyTo, e.CorrelationId, e.MessageId}
	if s.returned[k] == 0 {
		return false
	}
	if s.returned[k]--; s.returned[k] == 0 {
		delete(s.returned, k)
	}
	return true
}

// returnKey tells mandatory messages apart among the returns.
type returnKey struct{ replyTo, correlationID, messageID string }

// maxInFlight bounds the messages sent and not yet confirmed on a channel.
// It keeps amqp091-go's confirm bookkeeping small (its multiple-ack handling
// walks all of them) while leaving far more in flight than a broker round
// trip needs at full speed.
const maxInFlight = 1024

// corkAcks opens a burst of callbacks, if the publisher has a hook for it.
func (p *Publisher) corkAcks() (end func()) {
	if p.burst == nil {
		return func() {}
	}
	return p.burst()
}

// nudge makes sure serve looks at the queue at least once more.
func (p *Publisher) nudge() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// expiryScan is how often the queue is cleared of expired messages while
// the connection is down.
const expiryScan = time.Second

// dropExpired ends the queued messages whose deadline has passed.
func (p *Publisher) dropExpired() {
	now := time.Now()
	var expired []*entry
	p.mu.Lock()
	kept := p.queued[:0]
	for _, e := range p.queued {
		if !e.Deadline.IsZero() && !now.Before(e.Deadline) {
			expired = append(expired, e)
		} else {
			kept = append(kept, e)
		}
	}
	clear(p.queued[len(kept):])
	p.queued = kept
	p.mu.Unlock()
	for _, e := range expired {
		if e.done != nil {
			e.done(Expired)
		}
	}
}

// Len returns how many messages wait to be sent.
func (p *Publisher) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.queued)
}

// abandon ends every message still waiting, after Close.
func (p *Publisher) abandon() {
	p.mu.Lock()
	rest := p.queued
	p.queued, p.closed = nil, true
	p.mu.Unlock()
	for _, e := range rest {
		if e.done != nil {
			e.done(Abandoned)
		}
	}
}

// Stop stops publishing without waiting: further Publish calls fail, and
// messages not yet confirmed get Abandoned once the goroutine has ended.
func (p *Publisher) Stop() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.stop()
}

// Close stops publishing and waits for the publisher's goroutine. When the
// broker blocks the connection (memory alarm), that goroutine may be stuck
// writing until the connection closes: call Stop, close the connection,
// then Close. It is idempotent.
func (p *Publisher) Close() error {
	p.Stop()
	<-p.done
	return nil
}
