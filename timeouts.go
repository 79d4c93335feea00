package amqprpc

import (
	"sync/atomic"
	"time"
)

// pendingCall is a call the client codec has sent and not yet completed.
type pendingCall struct {
	seq   uint64
	info  *callInfo // nil for plain net/rpc users
	reply any       // decoded into while reading the header (a call of Client's)

	// The request, kept to publish it again if the reply queue is lost.
	method, key string
	body        []byte
	ttl         time.Time // its deadline; zero: none

	// heldFor is the unavailable queue the call is held for (see
	// refused), heldRefused whether the queue was there and the broker
	// nacked the request, holds how often, retried whether it was
	// published once more after a return; protected by the codec's mu.
	// acked says that the broker took a copy of the request: the call may
	// have run.
	heldFor     string
	heldRefused bool
	holds       int
	retried     bool
	acked       atomic.Bool

	cs callSpan // the call's span and metrics, ended by finish

	// deadline is set for calls that nobody else watches (Go, and plain
	// net/rpc users of NewClientCodec): the codec itself fails them when it
	// passes. Such calls sit in the codec's timeout list, oldest first.
	deadline   time.Time
	prev, next *pendingCall
}

// timeoutList is a doubly-linked list of pending calls ordered by deadline.
// Every call in it gets the same timeout at the moment net/rpc serialises its
// write, so appending keeps the order and one timer for the head serves all:
// no timer or goroutine per call. Its user holds the lock that guards it.
type timeoutList struct {
	head, tail *pendingCall
}

func (l *timeoutList) push(p *pendingCall) {
	p.prev, p.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = p
	} else {
		l.head = p
	}
	l.tail = p
}

// remove unlinks p; it is a no-op for a call that is not in the list.
func (l *timeoutList) remove(p *pendingCall) {
	if p.prev == nil && l.head != p {
		return
	}
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		l.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		l.tail = p.prev
	}
	p.prev, p.next = nil, nil
}

// expire is the codec's one timeout goroutine: it fails the calls at the head
// of the timeout list as their deadline passes.
func (c *clientCodec) expire() {
	defer c.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		c.mu.Lock()
		now := time.Now()
		var queued bool
		var ended []*pendingCall
		var errs []error
		for p := c.timeouts.head; p != nil && !p.deadline.After(now); p = c.timeouts.head {
			c.takeLocked(p.seq)
			err, q := c.failLocked(p, errTimedOut)
			queued = queued || q
			ended, errs = append(ended, p), append(errs, err)
		}
		wait := time.Hour
		if h := c.timeouts.head; h != nil {
			wait = h.deadline.Sub(now)
		}
		c.mu.Unlock()
		if queued {
			signal(c.synthReady)
		}
		for i, p := range ended {
			p.cs.event(eventTimedOut)
			c.finish(p, errs[i], -1)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-c.timerReset:
		case <-c.closed:
			return
		}
	}
}
