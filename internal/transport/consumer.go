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
	Queue    string
	Prefetch int
	// Remaining, if set, says how many more deliveries the consumer may
	// take: a new channel's prefetch is at most that, and at zero the
	// consumer does not consume again.
	Remaining func() int
	// Setup runs on every new channel before consuming, to declare what the
	// consumer needs (it may be nil). Its error ends the first attempt; on
	// later reconnections it is retried.
	Setup func(*amqp.Channel) error
	// WaitForQueue makes a missing queue (404 NOT_FOUND) a reason to wait
	// and look again, every 50 ms at first and then less often, up to every
	// second, rather than an error.
	WaitForQueue bool
}

// Consumer consumes a queue on channels of a Conn and survives their loss:
// it consumes again on the next channel, re-running Setup. Deliveries come
// out of one channel for its whole life, each still tied to the AMQP channel
// it came on: acking one from a lost channel fails (the broker has already
// requeued it) and never reaches the new channel with a stale tag.
type Consumer struct {
	conn *Conn
	cfg  ConsumerConfig
	log  *slog.Logger
	tag  string // consumer tag, the same on every channel
	out  chan amqp.Delivery
	ctx  context.Context // ends with Close
	stop context.CancelFunc
	done chan struct{} // closed when run has ended
	// Lost receives (non-blocking, capacity 1) each time a channel was lost
	// and consuming resumed on a new one.
	resumed chan struct{}

	mu sync.Mutex
	// protects ch and cancelled
	ch        *amqp.Channel
	cancelled bool // by Cancel: consume no more
}

// errQueueMissing is open's error for a queue that does not exist (yet).
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
		out:     make(chan amqp.Delivery),
		done:    make(chan struct{}),
		resumed: make(chan struct{}, 1),
	}
	firstCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(kctx, cancel)()
	deliveries, err := k.open(firstCtx)
	if err != nil && !(cfg.WaitForQueue && errors.Is(err, errQueueMissing)) {
		stop()
		return nil, err
	}
	go k.run(deliveries)
	return k, nil
}

// consumerSeq numbers consumer tags within the process.
var consumerSeq atomic.Uint64

// errCancelled is open's error once Cancel was called.
var errCancelled = errors.New("amqprpc: consumer cancelled")

// open opens a channel and consumes on it.
func (k *Consumer) open(ctx context.Context) (<-chan amqp.Delivery, error) {
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
	deliveries, err := func() (<-chan amqp.Delivery, error) {
		if k.cfg.Setup != nil {
			if err := k.cfg.Setup(ch); err != nil {
				return nil, err
			}
		}
		if err := ch.Qos(prefetch, 0, false); err != nil {
			return nil, fmt.Errorf("amqprpc: qos: %w", err)
		}
		d, err := ch.Consume(k.cfg.Queue, k.tag, false, false, false, false, nil)
		if err != nil {
			var ae *amqp.Error
			if errors.As(err, &ae) && ae.Code == amqp.NotFound {
				return nil, fmt.Errorf("amqprpc: consume %s: %w: %w", k.cfg.Queue, errQueueMissing, err)
			}
			return nil, fmt.Errorf("amqprpc: consume %s: %w", k.cfg.Queue, err)
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
	return deliveries, nil
}

// run forwards deliveries and re-consumes after every loss until Close.
func (k *Consumer) run(deliveries <-chan amqp.Delivery) {
	defer close(k.done)
	defer close(k.out)
	first := true
	var wait time.Duration
	for {
		if deliveries != nil {
			if !first {
				select {
				case k.resumed <- struct{}{}:
				default:
				}
			}
			first = false
			for d := range deliveries {
				select {
				case k.out <- d:
				case <-k.ctx.Done():
					return // d is unacked: closing the channel requeues it
				}
			}
			k.mu.Lock()
			ch, cancelled := k.ch, k.cancelled
			if !cancelled {
				k.ch = nil
			}
			k.mu.Unlock()
			if cancelled {
				// basic.cancel ended the stream, but deliveries still
				// unacked must be acked on this channel: Close closes it.
				return
			}
			_ = ch.Close()
		}
		if k.ctx.Err() != nil {
			return
		}
		var err error
		deliveries, err = k.open(k.ctx)
		if err == nil {
			wait = 0
			continue
		}
		if errors.Is(err, ErrClosed) || errors.Is(err, errCancelled) || k.ctx.Err() != nil {
			return
		}
		if errors.Is(err, errQueueMissing) {
			first = true // waiting for the queue is not a resumption
		} else {
			k.log.Debug("amqprpc: consuming again failed; retrying", "queue", k.cfg.Queue, "err", err)
		}
		deliveries = nil
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

// Deliveries is the consumer's one output; it is closed when the consumer
// has stopped for good (Close, or the loss of a wrapped connection).
func (k *Consumer) Deliveries() <-chan amqp.Delivery { return k.out }

// Resumed receives a value after consuming resumed on a new channel.
func (k *Consumer) Resumed() <-chan struct{} { return k.resumed }

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
