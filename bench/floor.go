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
//
// With like set it is still hand-written, but asks the broker for what
// amqprpc asks it for by default: named direct exchanges for requests and
// replies, a durable request queue, a durable reply queue with x-expires
// whose replies are acked (every 64) instead of auto-acked, mandatory
// publishing, the properties amqprpc sets (content type, type, message id,
// expiration) and separate connections for publishing and consuming. The
// gap between the two floors is what those features cost the broker and
// the client library; the gap between this one and amqprpc is amqprpc's
// own.
type floor struct {
	like  bool
	queue string
	reqX  string // "" is the default exchange
	repX  string

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

	// With like: the connections the client and the server publish on.
	cpub, spub *amqp.Connection
}

func startFloor(url string) (Contender, error) { return newFloor(url, false) }

func startFloorLike(url string) (Contender, error) { return newFloor(url, true) }

func newFloor(url string, like bool) (Contender, error) {
	f := &floor{like: like, queue: randomName("bench_floor_"), waiting: make(map[string]chan []byte)}
	conns := make([]*amqp.Connection, 2, 4)
	if like {
		conns = conns[:4]
		f.reqX, f.repX = f.queue, f.queue+"_response"
	}
	for i := range conns {
		c, err := amqp.Dial(url)
		if err != nil {
			_ = f.Close()
			return nil, err
		}
		conns[i] = c
	}
	f.sconn, f.cconn, f.spub, f.cpub = conns[0], conns[1], conns[0], conns[1]
	if like {
		f.spub, f.cpub = conns[2], conns[3]
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
	if f.like {
		if err := in.ExchangeDeclare(f.reqX, "direct", false, true, false, false, nil); err != nil {
			return err
		}
		if err := in.ExchangeDeclare(f.repX, "direct", false, true, false, false, nil); err != nil {
			return err
		}
		if _, err := in.QueueDeclare(f.queue, true, false, false, false, nil); err != nil { // durable
			return err
		}
		if err := in.QueueBind(f.queue, f.queue, f.reqX, false, nil); err != nil {
			return err
		}
	} else if _, err := in.QueueDeclare(f.queue, false, true, true, false, nil); err != nil { // exclusive
		return err
	}
	if err := in.Qos(256, 0, false); err != nil {
		return err
	}
	deliveries, err := in.Consume(f.queue, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	out, err := f.spub.Channel()
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
			p := amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body}
			if f.like {
				p.ContentType, p.Type, p.Expiration = d.ContentType, d.Type, d.Expiration
			}
			err := out.Publish(f.repX, d.ReplyTo, false, false, p)
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
	var q amqp.Queue
	if f.like {
		q, err = ch.QueueDeclare(f.queue+"_reply", true, false, false, false, amqp.Table{"x-expires": int64(300000)})
		if err == nil {
			err = ch.QueueBind(q.Name, q.Name, f.repX, false, nil)
		}
		if err == nil {
			err = ch.Qos(128, 0, false)
		}
	} else {
		q, err = ch.QueueDeclare("", false, true, true, false, nil) // exclusive, server-named
	}
	if err != nil {
		return err
	}
	f.replyQ = q.Name
	replies, err := ch.Consume(q.Name, "", !f.like, true, false, false, nil)
	if err != nil {
		return err
	}
	if f.pubCh, err = f.cpub.Channel(); err != nil {
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
		n := 0
		for d := range replies {
			if n++; f.like && n%64 == 0 {
				_ = d.Ack(true)
			}
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
	p := amqp.Publishing{CorrelationId: id, ReplyTo: f.replyQ, Body: body}
	if f.like {
		p.ContentType, p.Type, p.MessageId, p.Expiration = "application/msgpack", "Echo.Echo", id, "30000"
	}
	err := f.pubCh.Publish(f.reqX, f.queue, f.like, false, p)
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
	if f.like && f.sconn != nil {
		if ch, err := f.sconn.Channel(); err == nil {
			_, err1 := ch.QueueDelete(f.queue, false, false, false)
			_, err2 := ch.QueueDelete(f.queue+"_reply", false, false, false)
			errs = append(errs, err1, err2)
		}
	}
	for _, c := range []*amqp.Connection{f.cconn, f.sconn, f.cpub, f.spub} {
		if c != nil && !c.IsClosed() {
			if err := c.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
				errs = append(errs, err)
			}
		}
	}
	f.done.Wait()
	return errors.Join(errs...)
}
