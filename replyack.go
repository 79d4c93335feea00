package amqprpc

import (
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Replies are acked together, with one multiple ack for up to
// replyAckBatch of them or after replyAckDelay: each ack costs the broker
// about as much CPU as the reply itself (measured: 17 us per call on the
// benchmark machine when every burst was acked at once). Unacked replies
// are only at risk if the connection drops, and then the broker redelivers
// them and the client drops the duplicates. replyPrefetch is far above the
// batch, so the broker never waits for these acks.
const (
	replyAckBatch = 64
	replyAckDelay = 20 * time.Millisecond
)

// replyAcker holds the replies a client read and has not acked yet, and
// acks them with one multiple ack (the client's side of what
// transport.Acker does for servers). The reader adds to it and flushes it
// when due; Close flushes it before the channel closes.
type replyAcker struct {
	mu sync.Mutex
	// protects the fields below
	unacked amqp.Acknowledger // channel of the replies read but not acked yet
	tag     uint64            // the last of them
	n       int
	since   time.Time // when the oldest of them was read

	timer *time.Timer // the reader's, for when they are due
}

func newReplyAcker() *replyAcker {
	a := &replyAcker{timer: time.NewTimer(time.Hour)}
	a.timer.Stop()
	return a
}

// add notes that d was read.
func (a *replyAcker) add(d *amqp.Delivery) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.unacked != nil && a.unacked != d.Acknowledger {
		a.flushLocked() // a new channel: acks never cross channels
	}
	if a.unacked == nil {
		a.since = time.Now()
	}
	a.unacked, a.tag = d.Acknowledger, d.DeliveryTag
	if a.n++; a.n >= replyAckBatch {
		a.flushLocked()
	}
}

// due returns what the reader waits on for the next flush: nil when
// nothing waits for an ack. A batch overdue is flushed now.
func (a *replyAcker) due() <-chan time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.unacked == nil {
		return nil
	}
	wait := replyAckDelay - time.Since(a.since)
	if wait <= 0 {
		a.flushLocked()
		return nil
	}
	a.timer.Reset(wait)
	return a.timer.C
}

// lost forgets the replies of a channel that was lost: the broker
// requeued them.
func (a *replyAcker) lost() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unacked, a.n = nil, 0
}

// flush acks every reply read so far on the current channel.
func (a *replyAcker) flush() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.flushLocked()
}

func (a *replyAcker) flushLocked() {
	if a.unacked == nil {
		return
	}
	_ = a.unacked.Ack(a.tag, true) // fails only if the channel is gone: then the broker requeued them
	a.unacked, a.n = nil, 0
}
