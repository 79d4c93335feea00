package amqprpc

import "sync/atomic"

// quota counts the well-formed calls a ReceiveFromQueue takes against its
// maxCalls. A call counts from the moment it is taken until its args turn
// out not to decode (or its method not to exist): while such calls are
// undecided, a receiver at its limit waits for them (decided) before it
// stops, since one may free a place.
type quota struct {
	limit     int           // of well-formed calls to take; <= 0: no limit
	count     atomic.Int64  // well-formed calls taken so far (also read by the consumer)
	undecided atomic.Int64  // calls taken whose args are not decoded yet
	decided   chan struct{} // capacity 1: undecided went down
}

func newQuota(limit int) quota {
	return quota{limit: limit, decided: make(chan struct{}, 1)}
}

// full reports whether the limit is reached.
func (q *quota) full() bool { return q.limit > 0 && q.count.Load() >= int64(q.limit) }

// remaining is how many more calls a receiver with a limit may take.
func (q *quota) remaining() int { return q.limit - int(q.count.Load()) }

// take counts a call taken, undecided until decide.
func (q *quota) take() {
	q.count.Add(1)
	q.undecided.Add(1)
}

// decide settles a call taken: it counts if wellFormed.
func (q *quota) decide(wellFormed bool) {
	if !wellFormed {
		q.count.Add(-1)
	}
	q.undecided.Add(-1)
	signal(q.decided)
}
