package transport

import (
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Acker acks deliveries in as few frames as it may: during a burst (see
// Burst) the acks are gathered, and at its end each channel gets one
// multiple ack for the run of settled deliveries at the head of its
// outstanding ones, and single acks for the others. Outside a burst an ack
// is sent at once. Every delivery taken must be registered with Take and,
// once settled, reported through Ack or Settled. It is safe for concurrent
// use.
type Acker struct {
	mu sync.Mutex
	// protects everything below
	burst int
	idle  sync.Cond // signalled when the last burst ends
	chans map[amqp.Acknowledger]*outstanding
}

// outstanding is one channel's deliveries not yet released, in tag order.
type outstanding struct {
	tags  []uint64
	state map[uint64]uint8 // ackDue or settled; absent: still being handled
}

const (
	ackDue  = 1 // to be acked
	settled = 2 // no longer outstanding at the broker (acked, nacked, rejected)
)

// NewAcker returns an empty Acker.
func NewAcker() *Acker {
	a := &Acker{chans: make(map[amqp.Acknowledger]*outstanding)}
	a.idle.L = &a.mu
	return a
}

// Sync waits until every ack decided so far has been handed to its channel:
// until no burst is open. Call it before closing a channel whose deliveries
// were acked, or the close may overtake the acks and the broker requeue
// deliveries that were done with.
func (a *Acker) Sync() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.burst > 0 {
		a.idle.Wait()
	}
}

// Take registers d as outstanding. Deliveries of one channel must be taken
// in the order they arrived.
func (a *Acker) Take(d *amqp.Delivery) {
	a.mu.Lock()
	o := a.chans[d.Acknowledger]
	if o == nil {
		o = &outstanding{state: make(map[uint64]uint8)}
		a.chans[d.Acknowledger] = o
	}
	o.tags = append(o.tags, d.DeliveryTag)
	a.mu.Unlock()
}

// Ack acks d: at once outside a burst, at the burst's end inside one. An
// ack on a channel lost since fails silently: the broker requeued d.
func (a *Acker) Ack(d *amqp.Delivery) { a.mark(d, ackDue) }

// Settled reports that d was settled otherwise (nacked, rejected).
func (a *Acker) Settled(d *amqp.Delivery) { a.mark(d, settled) }

// mark records what became of d and, outside a burst, sends what is due.
func (a *Acker) mark(d *amqp.Delivery, state uint8) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o := a.chans[d.Acknowledger]; o != nil {
		o.state[d.DeliveryTag] = state
	}
	if a.burst == 0 {
		a.flushLocked()
	}
}

// Burst gathers acks until the returned func is called.
func (a *Acker) Burst() (end func()) {
	a.mu.Lock()
	a.burst++
	a.mu.Unlock()
	return func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.burst--; a.burst == 0 {
			a.flushLocked()
			a.idle.Broadcast()
		}
	}
}

// flushLocked sends the acks due. a.mu is held, so that acks leave in the
// order they were decided.
func (a *Acker) flushLocked() {
	for ch, o := range a.chans {
		// The settled head of the queue: one multiple ack covers it.
		var upTo uint64
		n := 0
		for _, t := range o.tags {
			s := o.state[t]
			if s == 0 {
				break
			}
			if s == ackDue {
				upTo = t
			}
			delete(o.state, t)
			n++
		}
		o.tags = o.tags[n:]
		if upTo != 0 {
			_ = ch.Ack(upTo, true)
		}
		// Behind a delivery still being handled: single acks. Only the
		// deliveries still being handled stay outstanding, so that one slow
		// handler does not make every later flush walk all the deliveries
		// done behind it.
		kept := o.tags[:0]
		for _, t := range o.tags {
			switch o.state[t] {
			case ackDue:
				_ = ch.Ack(t, false)
				delete(o.state, t)
			case settled:
				delete(o.state, t)
			default:
				kept = append(kept, t)
			}
		}
		o.tags = kept
		if len(o.tags) == 0 {
			delete(a.chans, ch)
		}
	}
}
