package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// ConsumerConfig says what a Consumer consumes and how.
type ConsumerConfig struct {
	Queue string
	// QueueName, if set, names the queue at each consume instead of Queue,
	// after Setup ran: a queue that Setup may move to a new name.
	QueueName func() string
	Prefetch  int
	// Remaining, if set, says how many more deliveries the consumer may
	// take: a new channel's prefetch is at most that, and at zero the
	// consumer does not consume again.
	Remaining func() int
	// Setup runs on every new channel before consuming, to declare what the
	// consumer needs (it may be nil). Its error ends the first attempt; on
	// later reconnections it is retried.
	Setup func(*amqp.Channel) error
	// Cancelled, if set, is called when the broker cancels the consumer
	// (basic.cancel: its queue was deleted), before it consumes again.
	Cancelled func()
	// WaitForQueue makes a missing queue, or one whose node is down (404
	// NOT_FOUND), a reason to wait and look again, every 50 ms at first and then less often, up to every
	// second, rather than an error.
	WaitForQueue bool
}

// Consumer consumes a queue on channels of a Conn and survives their loss:
// it consumes again on the next channel, re-running Setup. Deliveries come
// out of one channel for its whole life, each still tied to the AMQP channel
// it came on: acking one from a lost channel fails (the broker has already
// requeued it) and never reaches the new channel with a stale tag.
type Consumer struct {
	conn    *Conn
	cfg     ConsumerConfig
	log     *slog.Logger
	tag     string          // consumer tag, the same on every channel
	ctx     context.Context // ends with Close
	stop    context.CancelFunc
	done    chan struct{} // closed when run has ended
	updated chan struct{} // capacity 1: cur holds new deliveries

	mu sync.Mutex
	// protects ch, cur and cancelled
	ch        *amqp.Channel
	cur       <-chan amqp.Delivery // the latest channel's, until a Stream takes them
	cancelled bool                 // by Cancel: consume no more
}

// errQueueMissing is open's error for a queue that does not exist (yet),
// or whose node is down (see QueueDown).
var errQueueMissing = errors.New("queue not found")

// Consume starts consuming. The first attempt is synchronous, waits for the
// connection up to ctx, and its error is returned, except a missing queue
// when cfg.WaitForQueue is set: then Consume returns at once and the
// consumer waits for the queue.
func (c *Conn) Consume(ctx context.Context, cfg ConsumerConfig) (*Consumer, error) {
	kctx, stop := context.WithCancel(context.Background())
	k := &Consumer{
		conn: c, cfg: cfg, log: c.log, ctx: kctx, stop: stop,
		tag:     "amqprpc-" + strconv.FormatUint(consumerSeq.Add(1), 10),
		done:    make(chan struct{}),
		updated: make(chan struct{}, 1),
	}
	firstCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(kctx, cancel)()
	first, err := k.open(firstCtx)
	if err != nil && !(cfg.WaitForQueue && errors.Is(err, errQueueMissing)) {
		stop()
		return nil, err
	}
	go k.run(first)
	return k, nil
}

// consumerSeq numbers consumer tags within the process.
var consumerSeq atomic.Uint64

// errCancelled is open's error once Cancel was called.
var errCancelled = errors.New("amqprpc: consumer cancelled")

// sub is one channel's subscription: its deliveries and the notifications
// that end it, registered before consuming so that none is missed.
type sub struct {
	deliveries <-chan amqp.Delivery
	closed     chan *amqp.Error
	cancelled  chan string // the broker cancelled us (the queue was deleted)
}

// open opens a channel, runs Setup on it and consumes on it.
func (k *Consumer) open(ctx context.Context) (*sub, error) {
	k.mu.Lock()
	cancelled := k.cancelled
	k.mu.Unlock()
	if cancelled {
		return nil, errCancelled
	}
	prefetch := k.cfg.Prefetch
	if k.cfg.Remaining != nil {
		prefetch = min(prefetch, k.cfg.Remaining())
		if prefetch <= 0 {
			return nil, errCancelled
		}
	}
	ch, err := k.conn.Channel(ctx)
	if err != nil {
		return nil, err
	}
	su := &sub{
		closed:    ch.NotifyClose(make(chan *amqp.Error, 1)),
		cancelled: ch.NotifyCancel(make(chan string, 1)),
	}
	deliveries, err := func() (<-chan amqp.Delivery, error) {
		if k.cfg.Setup != nil {
			if err := k.cfg.Setup(ch); err != nil {
				return nil, err
			}
		}
		if err := ch.Qos(prefetch, 0, false); err != nil {
			return nil, fmt.Errorf("amqprpc: qos: %w", err)
		}
		queue := k.queue()
		d, err := ch.Consume(queue, k.tag, false, false, false, false, nil)
		if err != nil {
			if QueueMissing(err) || QueueDown(err) {
				return nil, fmt.Errorf("amqprpc: consume %s: %w: %w", queue, errQueueMissing, err)
			}
			return nil, fmt.Errorf("amqprpc: consume %s: %w", queue, err)
		}
		return d, nil
	}()
	if err != nil {
		_ = ch.Close()
		return nil, err
	}
	k.mu.Lock()
	k.ch = ch
	cancelled = k.cancelled
	k.mu.Unlock()
	if k.ctx.Err() != nil || cancelled { // Close or Cancel ran meanwhile and may have missed ch
		_ = ch.Close()
		return nil, errCancelled
	}
	su.deliveries = deliveries
	return su, nil
}

// queue is the name of the queue to consume now.
func (k *Consumer) queue() string {
	if k.cfg.QueueName != nil {
		return k.cfg.QueueName()
	}
	return k.cfg.Queue
}

// run keeps the consumer consuming: it publishes each new channel's
// deliveries (see Stream), waits for that channel to close or the broker to
// cancel the consumer, and consumes again, until Close or Cancel.
func (k *Consumer) run(su *sub) {
	defer close(k.done)
	var wait time.Duration
	var rl retryLog
	for {
		if su != nil {
			k.mu.Lock()
			ch := k.ch
			k.cur = su.deliveries
			k.mu.Unlock()
			select {
			case k.updated <- struct{}{}:
			default:
			}
			select {
			case <-su.closed:
			case <-su.cancelled: // the broker cancelled us: the queue was deleted
				if k.cfg.Cancelled != nil {
					k.cfg.Cancelled()
				}
			case <-k.ctx.Done():
				return
			}
			k.mu.Lock()
			stop := k.cancelled
			if !stop {
				k.ch = nil
			}
			k.mu.Unlock()
			if stop {
				// Our own Cancel: deliveries still unacked must be acked on
				// this channel, so Close closes it.
				return
			}
			_ = ch.Close()
		}
		if k.ctx.Err() != nil {
			return
		}
		var err error
		su, err = k.open(k.ctx)
		if err == nil {
			wait = 0
			rl.ok()
			continue
		}
		if errors.Is(err, ErrClosed) || errors.Is(err, errCancelled) || k.ctx.Err() != nil {
			return
		}
		if !errors.Is(err, errQueueMissing) || QueueDown(err) {
			rl.failed(k.log, "amqprpc: consuming again failed; retrying", "queue", k.queue(), "err", err)
		}
		su = nil
		// Look again soon, then less often: every look at a missing queue
		// costs the broker a channel.
		wait = min(max(2*wait, 50*time.Millisecond), time.Second)
		select {
		case <-time.After(wait):
		case <-k.ctx.Done():
			return
		}
	}
}

// Stream reads a Consumer's deliveries across its channels straight from
// amqp091-go, without a goroutine in between. Its user selects on
// Deliveries, Next and Ended: when Deliveries closes (its channel was lost)
// the user calls Lost and waits on Next (a new channel's deliveries, then
// Switch) or Ended (the consumer stopped for good). A Stream belongs to one
// reading goroutine.
type Stream struct {
	k   *Consumer
	cur <-chan amqp.Delivery
}

// Stream returns a reader of k's deliveries.
func (k *Consumer) Stream() *Stream { return &Stream{k: k} }

// Deliveries is the current channel's deliveries, nil between channels.
func (s *Stream) Deliveries() <-chan amqp.Delivery { return s.cur }

// Next receives when new deliveries are ready, while between channels.
func (s *Stream) Next() <-chan struct{} {
	if s.cur != nil {
		return nil
	}
	return s.k.updated
}

// Ended is closed once the consumer has stopped for good, while between
// channels.
func (s *Stream) Ended() <-chan struct{} {
	if s.cur != nil {
		return nil
	}
	return s.k.done
}

// Lost records that Deliveries closed.
func (s *Stream) Lost() { s.cur = nil }

// Switch takes the new channel's deliveries after Next fired.
func (s *Stream) Switch() {
	s.k.mu.Lock()
	cur := s.k.cur
	s.k.cur = nil // taken: a stale value must not be read twice
	s.k.mu.Unlock()
	s.cur = cur
}

// Cancel asks the broker to deliver no more (basic.cancel) and stops the
// consumer from consuming again after a reconnection. Deliveries already
// received stay unacked until they are settled or Close requeues them.
func (k *Consumer) Cancel() {
	k.mu.Lock()
	k.cancelled = true
	ch := k.ch
	k.mu.Unlock()
	if ch != nil {
		_ = ch.Cancel(k.tag, false)
	}
}

// Close stops consuming and closes the current channel, so the broker
// requeues every delivery not yet acked. It waits for the consumer's
// goroutine and is idempotent.
func (k *Consumer) Close() error {
	k.stop()
	k.mu.Lock()
	ch := k.ch
	k.mu.Unlock()
	var err error
	if ch != nil { // ends run's wait for deliveries
		if cerr := ch.Close(); cerr != nil && !errors.Is(cerr, amqp.ErrClosed) {
			err = fmt.Errorf("amqprpc: close channel: %w", cerr)
		}
	}
	<-k.done
	return err
}
