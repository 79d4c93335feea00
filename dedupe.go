package amqprpc

import (
	"hash/maphash"
	"sync"
	"time"
)

// dedupe remembers the calls a server answered recently, so that a request
// it sees again (redelivered after a lost connection, or published again by
// a client that never got the broker's confirm) is not run twice: if the
// first run is still going the duplicate waits for its reply, otherwise it
// is acked at once. Calls are known by reply_to and message_id, hashed to 64
// bits; answered ones are kept for one to two windows. Safe for concurrent
// use by the codecs of one server.
type dedupe struct {
	window time.Duration
	seed   maphash.Seed

	mu sync.Mutex
	// protects everything below
	running  map[uint64][]*request // calls being run, with duplicates parked behind them
	cur, old map[uint64]struct{}   // answered calls, this window and the one before
	rotated  time.Time
}

func newDedupe(window time.Duration) *dedupe {
	if window <= 0 {
		return nil
	}
	return &dedupe{
		window:  window,
		seed:    maphash.MakeSeed(),
		running: make(map[uint64][]*request),
		cur:     make(map[uint64]struct{}),
		old:     make(map[uint64]struct{}),
		rotated: time.Now(),
	}
}

// key identifies req's call; 0 means it cannot be told apart (no message id).
func (d *dedupe) key(req *request) uint64 {
	if req.d.MessageId == "" {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(d.seed)
	h.WriteString(req.d.ReplyTo)
	h.WriteByte(0)
	h.WriteString(req.d.MessageId)
	if k := h.Sum64(); k != 0 {
		return k
	}
	return 1
}

// Verdicts of begin.
const (
	runIt    = iota // a call not seen before: run it
	answered        // a duplicate of an answered call: ack it
	parked          // a duplicate of a running call: finish will hand it back
)

// begin registers req under key and says what to do with it.
func (d *dedupe) begin(key uint64, req *request) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now := time.Now(); now.Sub(d.rotated) > d.window {
		d.old, d.cur, d.rotated = d.cur, make(map[uint64]struct{}, len(d.cur)), now
	}
	if _, ok := d.cur[key]; ok {
		return answered
	}
	if _, ok := d.old[key]; ok {
		return answered
	}
	if dups, ok := d.running[key]; ok {
		d.running[key] = append(dups, req)
		return parked
	}
	d.running[key] = nil
	return runIt
}

// finish ends the run of key's call; done says whether its reply is safely
// with the broker. It returns the duplicates that were parked behind it.
func (d *dedupe) finish(key uint64, done bool) []*request {
	d.mu.Lock()
	defer d.mu.Unlock()
	dups := d.running[key]
	delete(d.running, key)
	if done {
		d.cur[key] = struct{}{}
	}
	return dups
}
