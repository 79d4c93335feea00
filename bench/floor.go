package bench

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// floor is the minimal hand-written amqp091-go request/reply the issue
// describes: one client connection with a confirm channel and one reply
// queue consumer; a server with prefetch 256 that replies on a confirm
// channel and acks each request once its reply is confirmed. No codec, no
// framework, no timeouts, no reconnection.
type floor struct {
	queue string

	// client
	cconn   *amqp.Connection
	pubCh   *amqp.Channel
	replyQ  string
	pubMu   sync.Mutex
	seq     atomic.Uint64
	mu      sync.Mutex
	waiting map[string]chan []byte

	// server
	sconn *amqp.Connection
	done  sync.WaitGroup
}

func startFloor(url string) (Contender, error) {
	f := &floor{queue: randomName("bench_floor_"), waiting: make(map[string]chan []byte)}
	var err error
	if f.sconn, err = amqp.Dial(url); err != nil {
		return nil, err
	}
	if f.cconn, err = amqp.Dial(url); err != nil {
		_ = f.sconn.Close()
		return nil, err
	}
	if err := f.startServer(); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.startClient(); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

func (f *floor) startServer() error {
	in, err := f.sconn.Channel()
	if err != nil {
		return err
	}
	if _, err := in.QueueDeclare(f.queue, false, true, true, false, nil); err != nil { // exclusive
		return err
	}
	if err := in.Qos(256, 0, false); err != nil {
		return err
	}
	deliveries, err := in.Consume(f.queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	out, err := f.sconn.Channel()
	if err != nil {
		return err
	}
	if err := out.Confirm(false); err != nil {
		return err
	}
	confirms := out.NotifyPublish(make(chan amqp.Confirmation, 1024))
	// Requests whose replies await their confirm, in publish order; the
	// confirm of the n-th reply acks the n-th request.
	var fifoMu sync.Mutex
	var fifo []uint64
	f.done.Add(2)
	go func() {
		defer f.done.Done()
		for c := range confirms {
			fifoMu.Lock()
			tag := fifo[0]
			fifo = fifo[1:]
			fifoMu.Unlock()
			if c.Ack {
				_ = in.Ack(tag, false)
			} else {
				_ = in.Nack(tag, false, true)
			}
		}
	}()
	go func() {
		defer f.done.Done()
		for d := range deliveries {
			fifoMu.Lock()
			fifo = append(fifo, d.DeliveryTag)
			err := out.Publish("", d.ReplyTo, false, false, amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body})
			if err != nil {
				fifo = fifo[:len(fifo)-1]
			}
			fifoMu.Unlock()
		}
	}()
	return nil
}

func (f *floor) startClient() error {
	ch, err := f.cconn.Channel()
	if err != nil {
		return err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil) // exclusive, server-named
	if err != nil {
		return err
	}
	f.replyQ = q.Name
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return err
	}
	if f.pubCh, err = f.cconn.Channel(); err != nil {
		return err
	}
	if err := f.pubCh.Confirm(false); err != nil {
		return err
	}
	confirms := f.pubCh.NotifyPublish(make(chan amqp.Confirmation, 1024))
	f.done.Add(2)
	go func() { // confirms must be drained
		defer f.done.Done()
		for range confirms {
		}
	}()
	go func() {
		defer f.done.Done()
		for d := range replies {
			f.mu.Lock()
			w := f.waiting[d.CorrelationId]
			delete(f.waiting, d.CorrelationId)
			f.mu.Unlock()
			if w != nil {
				w <- d.Body
			}
		}
	}()
	return nil
}

func (f *floor) Call(ctx context.Context, body []byte) ([]byte, error) {
	id := strconv.FormatUint(f.seq.Add(1), 10)
	w := make(chan []byte, 1)
	f.mu.Lock()
	f.waiting[id] = w
	f.mu.Unlock()
	f.pubMu.Lock()
	err := f.pubCh.Publish("", f.queue, false, false, amqp.Publishing{CorrelationId: id, ReplyTo: f.replyQ, Body: body})
	f.pubMu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case b := <-w:
		return b, nil
	case <-ctx.Done():
		f.mu.Lock()
		delete(f.waiting, id)
		f.mu.Unlock()
		return nil, ctx.Err()
	}
}

func (f *floor) Close() error {
	var errs []error
	for _, c := range []*amqp.Connection{f.cconn, f.sconn} {
		if c != nil {
			if err := c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	f.done.Wait()
	return errors.Join(errs...)
}
