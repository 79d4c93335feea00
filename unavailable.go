package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// A classic request queue lives on one node of a cluster. While that node
// is down the queue cannot be reached, and the broker returns a mandatory
// request routed to it as if no queue were bound (312 NO_ROUTE): the reply
// is the same as for a queue that does not exist. The client tells them
// apart by asking the broker about the queue (lookUpQueue). A call whose
// queue is unavailable is held, not failed: it is published again, a
// little later each time, until the queue takes it or the call's deadline
// ends it with an error matching both ErrQueueUnavailable and
// context.DeadlineExceeded. A quorum queue stays available while a
// majority of its nodes run (WithQueueType).

// Delays before a held call is published again: the first, doubling up to
// the last.
const (
	heldRetryFirst = 100 * time.Millisecond
	heldRetryMax   = 2 * time.Second
)

// queueFor is the request queue that a call routed with key goes to, as far
// as the client can tell: the main request queue for "", the queue that
// CreateRequestQueue(key) makes with its default binding otherwise; ""
// when there can be no such queue (its name would be too long).
func (n names) queueFor(key string) string {
	if key == "" {
		return n.requestQueue
	}
	if q, err := n.extraQueue(key); err == nil {
		return q
	}
	return ""
}

// refused handles call p's request, which the broker returned (o is
// Returned) or refused (Nacked): if its queue exists but is unavailable, or
// the client cannot ask now (its connection is down too), or the queue is
// there and refused it (a quorum queue without a leader while its node
// stops or an election runs; a full queue with overflow reject-publish),
// p is held and published again after a delay, within its deadline;
// otherwise it fails with o's error (ErrNoRoute, ErrRefused). A node that
// is shutting down nacks what it routed to its queues before it returns
// what it cannot route.
func (c *clientCodec) refused(p *pendingCall, o transport.Outcome) {
	queue := c.queueFor(p.key)
	state := queueAbsent
	if !c.fanout && queue != "" && c.lookUps != nil {
		state = c.lookUps.state(queue)
	}
	c.mu.Lock()
	if c.pending[p.seq] != p {
		c.mu.Unlock()
		return // completed meanwhile: timed out, cancelled, closed
	}
	var delay time.Duration
	switch {
	case state == queueUnavailable, state == queueReady && o == transport.Nacked:
		p.heldFor = queue
		p.heldRefused = state == queueReady
		delay = min(heldRetryFirst<<min(p.holds, 10), heldRetryMax)
		p.holds++
	case state == queueReady && o == transport.Returned && !p.retried:
		// Returned, yet there now: its node came back meanwhile. Once
		// more; a second return is a missing binding.
		p.retried = true
		delay = heldRetryFirst
	default:
		c.mu.Unlock()
		c.fail(p.seq, c.outcomeError(o, p.key, ""))
		return
	}
	logIt := p.heldFor != "" && time.Since(c.heldLogged) >= heldLogEvery
	if logIt {
		c.heldLogged = time.Now()
	}
	c.mu.Unlock()
	if logIt {
		c.log.Warn("amqprpc: a request queue is unavailable (its node is down, or it has no leader, or it is full); its calls wait for it until their deadline",
			"queue", queue, "outcome", o.String())
	}
	if !p.ttl.IsZero() && time.Until(p.ttl) < delay {
		return // its deadline ends it first
	}
	time.AfterFunc(delay, func() { c.publishAgain(p) })
}

// heldLogEvery is how often a client logs that calls are held.
const heldLogEvery = 30 * time.Second

// publishAgain publishes held call p again, if it is still pending.
func (c *clientCodec) publishAgain(p *pendingCall) {
	c.mu.Lock()
	pending := c.pending[p.seq] == p
	c.mu.Unlock()
	if !pending {
		return
	}
	p.cs.event(eventRetried, retryQueueUnavailable)
	switch err := c.publish(p); {
	case errors.Is(err, transport.ErrClosed):
		// Close fails it.
	case err != nil:
		c.fail(p.seq, err)
	}
}

// unavailableError is the error of a call that was held for its
// unavailable queue until err (its deadline, or its context) ended it. It
// matches ErrQueueUnavailable and err, and ErrRefused when the queue was
// there and the broker refused the request (refused).
type unavailableError struct {
	queue   string
	refused bool
	err     error
}

func (e *unavailableError) Error() string {
	if e.refused {
		return fmt.Sprintf("amqprpc: the broker refused the request for queue %s (no leader? full?) until the call ended: %v", e.queue, e.err)
	}
	return fmt.Sprintf("amqprpc: request queue %s is unavailable (its node is down?), and the call waited for it: %v", e.queue, e.err)
}

func (e *unavailableError) Is(target error) bool {
	return target == ErrQueueUnavailable || e.refused && target == ErrRefused
}
func (e *unavailableError) Unwrap() error { return e.err }

// endedWaiting is err, or for a call held for its queue whose request no
// queue took (so it did not run), an unavailableError.
func endedWaiting(p *pendingCall, err error) error {
	if p.heldFor == "" || p.acked.Load() || !(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		return err
	}
	return &unavailableError{queue: p.heldFor, refused: p.heldRefused, err: err}
}

// queueLookups asks the broker about request queues for returned calls:
// one question per queue at a time, its answer shared by every call that
// asks within lookupFresh.
type queueLookups struct {
	conn *transport.Conn
	log  *slog.Logger

	mu sync.Mutex
	// protects m
	m map[string]*lookup
}

// lookupFresh is how long an answer of queueLookups is used.
const lookupFresh = 250 * time.Millisecond

type lookup struct {
	done  chan struct{} // closed once state is known
	state queueState
	at    time.Time
}

func newQueueLookups(conn *transport.Conn, log *slog.Logger) *queueLookups {
	return &queueLookups{conn: conn, log: log, m: make(map[string]*lookup)}
}

// state returns queue's state as lookUpQueue finds it, but
// queueUnavailable too when the broker did not answer (the connection is
// down or going down): the queue may well be there.
func (l *queueLookups) state(queue string) queueState {
	l.mu.Lock()
	lk := l.m[queue]
	if lk != nil && (!closed(lk.done) || time.Since(lk.at) < lookupFresh) {
		l.mu.Unlock()
		<-lk.done
		return lk.state
	}
	for q, old := range l.m { // forget the stale answers
		if closed(old.done) && time.Since(old.at) >= lookupFresh {
			delete(l.m, q)
		}
	}
	lk = &lookup{done: make(chan struct{})}
	l.m[queue] = lk
	l.mu.Unlock()
	state, err := lookUpQueue(l.conn, queue)
	var ae *amqp.Error
	if errors.Is(err, amqp.ErrClosed) || errors.Is(err, context.DeadlineExceeded) ||
		errors.As(err, &ae) && ae.Code == amqp.ConnectionForced {
		state = queueUnavailable
	} else if err != nil {
		// Not an answer about the queue: logged, since the calls that
		// asked then fail as if it were missing (ErrNoRoute, ErrRefused).
		l.log.Warn("amqprpc: could not look up a request queue; its returned calls fail", "queue", queue, "err", err)
		state = queueAbsent
	}
	lk.state, lk.at = state, time.Now()
	close(lk.done)
	return state
}
