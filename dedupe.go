package amqprpc

import (
	"hash/maphash"
	"sync"
	"time"
)

// dedupe remembers the calls a server answered recently, so that a request
// it sees again (redelivered after a lost connection, or published again by
// a client that never got the broker's confirm or lost its reply queue) is
// not run twice: if the first run is still going the duplicate waits for
// its reply, otherwise it is answered again with the reply kept from the
// first run. A call is known by everything that makes it that call:
// reply_to, message_id, correlation_id, type, content_type and body, hashed
// to 64 bits; so two different calls that share a message_id are never
// taken for one. Answered calls are kept for one to two windows, their
// replies while they fit the byte budget (the oldest go first). Safe for
// concurrent use by the codecs of one server.
type dedupe struct {
	window time.Duration
	budget int // bytes of replies kept at most; 0: none
	seed   maphash.Seed

	mu sync.Mutex
	// protects everything below
	running  map[uint64][]*request // calls being run, with duplicates parked behind them
	cur, old map[uint64]*reply     // answered calls, this window and the one before; nil: reply not kept
	gen      uint64                // of cur
	rotated  time.Time
	kept     []*reply // replies in cur and old, oldest first from keptHead
	keptHead int
	keptSize int // bytes
}

// reply is the answer to one call, as publishReply sends it, and as the
// dedupe keeps it to answer a duplicate of the call.
type reply struct {
	errText string // the error text; empty for a success
	code    string // headerErrorCode's value, for errors of the server's own
	body    []byte // the encoded reply, of a success
	refused bool   // the error sent because the broker refused the reply
	keep    *reply // on that error: the reply to keep if it is refused too

	key uint64 // in the dedupe, once kept
	gen uint64 // the window it was kept in
}

// size is what keeping r costs, roughly, in bytes.
func (r *reply) size() int { return 96 + len(r.errText) + len(r.body) }

func newDedupe(window time.Duration, budget int) *dedupe {
	if window <= 0 {
		return nil
	}
	return &dedupe{
		window:  window,
		budget:  budget,
		seed:    maphash.MakeSeed(),
		running: make(map[uint64][]*request),
		cur:     make(map[uint64]*reply),
		old:     make(map[uint64]*reply),
		rotated: time.Now(),
	}
}

// key identifies req's call; 0 means it cannot be told apart (no message id).
func (d *dedupe) key(req *request) uint64 {
	m := &req.d
	if m.MessageId == "" {
		return 0
	}
	var h maphash.Hash
	h.SetSeed(d.seed)
	for _, s := range [...]string{m.ReplyTo, m.MessageId, m.CorrelationId, m.Type, m.ContentType} {
		h.WriteString(s)
		h.WriteByte(0)
	}
	h.Write(m.Body)
	if k := h.Sum64(); k != 0 {
		return k
	}
	return 1
}

// Verdicts of begin.
const (
	runIt    = iota // a call not seen before: run it
	answered        // a duplicate of an answered call: answer it again
	parked          // a duplicate of a running call: finish will hand it back
)

// begin registers req under key and says what to do with it; for a
// duplicate of an answered call, it also returns the reply kept, if any.
func (d *dedupe) begin(key uint64, req *request) (int, *reply) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now := time.Now(); now.Sub(d.rotated) > d.window {
		d.rotate(now)
	}
	if r, ok := d.cur[key]; ok {
		return answered, r
	}
	if r, ok := d.old[key]; ok {
		return answered, r
	}
	if dups, ok := d.running[key]; ok {
		d.running[key] = append(dups, req)
		return parked, nil
	}
	d.running[key] = nil
	return runIt, nil
}

// rotate starts a new window: the calls of the one before last are
// forgotten, with their replies.
func (d *dedupe) rotate(now time.Time) {
	d.old, d.cur, d.rotated = d.cur, make(map[uint64]*reply, len(d.cur)), now
	d.gen++
	for d.keptHead < len(d.kept) && d.kept[d.keptHead].gen+1 < d.gen {
		d.dropOldest()
	}
}

// finish ends the run of key's call. done says whether the call counts as
// answered: its reply is with the broker, or was refused for good; r is
// that reply, kept for duplicates if it fits the budget. It returns the
// duplicates that were parked behind the call.
func (d *dedupe) finish(key uint64, done bool, r *reply) []*request {
	d.mu.Lock()
	defer d.mu.Unlock()
	dups := d.running[key]
	delete(d.running, key)
	if !done {
		return dups
	}
	if r == nil || r.size() > d.budget/4 {
		d.cur[key] = nil
		return dups
	}
	r.key, r.gen = key, d.gen
	d.cur[key] = r
	d.kept = append(d.kept, r)
	d.keptSize += r.size()
	for d.keptSize > d.budget {
		d.dropOldest()
	}
	return dups
}

// dropOldest forgets the oldest reply kept; its call stays known as
// answered while its window lasts.
func (d *dedupe) dropOldest() {
	r := d.kept[d.keptHead]
	d.kept[d.keptHead] = nil
	d.keptHead++
	d.keptSize -= r.size()
	if d.cur[r.key] == r {
		d.cur[r.key] = nil
	} else if d.old[r.key] == r {
		d.old[r.key] = nil
	}
	if d.keptHead > len(d.kept)/2 { // reuse the front of the array
		n := copy(d.kept, d.kept[d.keptHead:])
		clear(d.kept[n:])
		d.kept, d.keptHead = d.kept[:n], 0
	}
}
