package amqprpc

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// replyQueue is a client's reply queue, rpc_<ns>_<id>_response, bound to
// the response exchange with key id. It is a classic queue, on the node
// the client was connected to when it declared it; when that node is
// down the queue cannot be reached (RabbitMQ answers 404 "home node ... is
// down"), and replies routed to it are dropped. The client then moves to
// a new queue, of the same name with ".1", ".2", ... added, on the node it
// is connected to now, bound with the same key, and publishes its pending
// calls again (lost): the servers answer the copies of calls they ran
// from their reply cache (see dedupe). Once the old node is back, its
// queue would get a copy of every reply until it expired, so the client
// deletes it as soon as it can (sweep).
type replyQueue struct {
	names  names
	id     string
	expiry time.Duration // the queue's x-expires
	conn   *transport.Conn
	log    *slog.Logger
	first  bool // no setup has run yet; only setup uses it
	ownID  bool // the id is the user's (WithClientID), not a random one

	// lost is set when the queue may have lost replies: the broker
	// cancelled the consumer (the queue was deleted), the queue was gone
	// when the consumer came back (it expired while the client was away),
	// or its node is down. The codec then publishes its pending calls
	// again once it consumes the queue (see clientCodec.queueLost).
	lost atomic.Bool

	mu sync.Mutex
	// protects name, moves, stale and sweeping
	name     string
	moves    int
	stale    []string // queues left on nodes that were down, to delete
	sweeping bool     // sweep runs

	done      chan struct{} // closed by close
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newReplyQueue(n names, id string, o *options, conn *transport.Conn) (*replyQueue, error) {
	q := &replyQueue{names: n, id: id, expiry: o.replyExpiry, conn: conn, log: o.logger,
		first: true, ownID: o.clientID != "", name: n.replyQueue(id), done: make(chan struct{})}
	if err := transport.CheckName("reply queue name (namespace and client id)", q.name); err != nil {
		return nil, err
	}
	return q, nil
}

// Name is the queue's name now.
func (q *replyQueue) Name() string {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.name
}

// setup is the reply consumer's Setup: it declares the queue on ch, and
// moves it first when its node is down.
func (q *replyQueue) setup(ch *amqp.Channel) error {
	// The request side once, so that the first call has a queue to wait
	// in; after that only the exchanges the reply queue needs. Servers
	// declare the request queue too, and the reply queue must not wait for
	// it: a classic request queue whose node is down would keep the client
	// from its replies.
	declare := q.names.declareExchanges
	if q.first {
		declare = q.names.requestSide(q.conn)
	}
	if err := declare(ch); err != nil {
		return err
	}
	name := q.Name()
	// A client id of the user's (WithClientID) may name a queue that exists
	// already, on a node that is down; a random one cannot.
	if !q.first || q.ownID {
		state, err := lookUpQueue(q.conn, name)
		if err != nil {
			return err
		}
		switch state {
		case queueAbsent:
			q.lost.Store(true)
		case queueUnavailable:
			name = q.move(name)
		}
	}
	q.first = false
	err := q.names.declareReplyQueue(ch, name, q.id, q.expiry)
	if transport.QueueDown(err) { // its node went down just now
		q.move(name)
	}
	return err
}

// move makes the queue that follows old, whose node is down, the reply
// queue, and returns its name.
func (q *replyQueue) move(old string) string {
	q.lost.Store(true)
	q.mu.Lock()
	defer q.mu.Unlock()
	next := q.names.replyQueue(q.id) + "." + strconv.Itoa(q.moves+1)
	if err := transport.CheckName("reply queue name", next); err != nil {
		q.log.Warn("amqprpc: the reply queue's node is down, and the name of a new one would be too long; waiting for the node",
			"queue", old, "err", err)
		return old
	}
	q.moves++
	q.name = next
	q.stale = append(q.stale, old)
	q.log.Warn("amqprpc: the reply queue's node is down; moving to a new reply queue and publishing the pending calls again",
		"queue", old, "new_queue", next)
	if !q.sweeping {
		q.sweeping = true
		q.wg.Add(1)
		go q.sweep()
	}
	return next
}

// sweepEvery is how often sweep tries to delete the queues left behind.
const sweepEvery = 5 * time.Second

// sweep deletes the queues left on nodes that were down, once they can be
// reached (or are gone), trying every sweepEvery until close.
func (q *replyQueue) sweep() {
	defer q.wg.Done()
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-q.done:
			return
		}
		q.mu.Lock()
		stale := append([]string(nil), q.stale...)
		q.mu.Unlock()
		var left []string
		for _, name := range stale {
			if !q.delete(name) {
				left = append(left, name)
			}
		}
		q.mu.Lock()
		q.stale = append(left, q.stale[len(stale):]...)
		if len(q.stale) == 0 {
			q.sweeping = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
	}
}

// delete deletes queue and reports whether it is gone.
func (q *replyQueue) delete(queue string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), sweepEvery)
	defer cancel()
	err := onChannel(ctx, q.conn, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(queue, false, false, false)
		return err
	})
	if err == nil {
		q.log.Info("amqprpc: deleted the reply queue left on a node that was down", "queue", queue)
	}
	return err == nil
}

// close stops sweep and waits for it: call it after the connection is
// closed (or, when it is shared, accept that a delete in flight on a link
// that went silent lasts until the heartbeat notices). It is idempotent.
func (q *replyQueue) close() error {
	q.closeOnce.Do(func() { close(q.done) })
	q.wg.Wait()
	return nil
}
