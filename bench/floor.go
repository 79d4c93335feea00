package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Feature is one thing amqprpc asks of the broker that the minimal floor
// does not: the floor can ask for it too, to measure what it costs.
type Feature uint

// The broker features of amqprpc's default settings.
const (
	// SplitConnections: publishing and consuming on separate connections
	// (issue 5: a blocked publisher must not stop deliveries).
	SplitConnections Feature = 1 << iota
	// NamedExchanges: requests and replies routed through named direct
	// exchanges, not the default exchange (the topology of issue 2).
	NamedExchanges
	// DurableQueues: a durable request queue and a durable reply queue with
	// x-expires, where the floor has exclusive ones.
	DurableQueues
	// Mandatory: requests published mandatory (ErrNoRoute, issue 3).
	Mandatory
	// Expiration: the deadline as each request's expiration (issue 2).
	Expiration
	// AckedReplies: replies consumed with acks (every 64) instead of
	// auto-ack, so none is lost with a connection (issue 5).
	AckedReplies
	// Properties: content type, type and message id on requests, content
	// type on replies.
	Properties

	// AllFeatures is what amqprpc asks the broker for by default.
	AllFeatures = SplitConnections | NamedExchanges | DurableQueues | Mandatory | Expiration | AckedReplies | Properties
)

var featureNames = []string{"split-connections", "named-exchanges", "durable-queues", "mandatory", "expiration", "acked-replies", "properties"}

func (f Feature) String() string {
	var names []string
	for i, n := range featureNames {
		if f&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, "+")
}

// ParseFeature returns the feature called name (as String prints it).
func ParseFeature(name string) (Feature, error) {
	for i, n := range featureNames {
		if n == name {
			return 1 << i, nil
		}
	}
	return 0, fmt.Errorf("unknown feature %q (one of %s)", name, strings.Join(featureNames, ", "))
}

// floor is the minimal hand-written amqp091-go request/reply the issue
// describes: one client connection with a confirm channel and one reply
// queue consumer; a server with prefetch 256 that replies on a confirm
// channel and acks each request once its reply is confirmed. No codec, no
// framework, no timeouts, no reconnection.
//
// With features it is still hand-written, but asks the broker for some of
// what amqprpc asks it for. With AllFeatures, the gap between it and the
// plain floor is what those features cost the broker and the client
// library; the gap between it and amqprpc is amqprpc's own.
type floor struct {
	has Feature
	// directReplyTo: replies through RabbitMQ's direct reply-to, consumed
	// without acks on the client's publishing channel, instead of a reply
	// queue (only without features).
	directReplyTo bool
	queue         string
	reqX          string // "" is the default exchange
	repX          string

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

	// The connections the client and the server publish on: their
	// consuming ones, unless SplitConnections.
	cpub, spub *amqp.Connection
}

func startPlainFloor(url string) (Contender, error) { return StartFloor(url, 0) }

func startFloorLike(url string) (Contender, error) { return StartFloor(url, AllFeatures) }

// FloorWithout is the floor with the same broker features as amqprpc but
// f, for measuring what f costs.
func FloorWithout(f Feature) Factory {
	return Factory{
		Name:  "floor with the same broker features, without " + f.String(),
		Short: "floor-" + f.String(),
		Start: func(url string) (Contender, error) { return StartFloor(url, AllFeatures&^f) },
	}
}

// FloorDirectReplyTo is the plain floor with its replies sent through
// RabbitMQ's direct reply-to (amq.rabbitmq.reply-to) instead of a reply
// queue: what issue 15 asked to measure before building on it.
var FloorDirectReplyTo = Factory{
	Name:  "floor, direct reply-to",
	Short: "floor-direct-reply-to",
	Start: func(url string) (Contender, error) { return startFloor(url, 0, true) },
}

// StartFloor starts the hand-written floor, asking the broker for features.
func StartFloor(url string, features Feature) (Contender, error) {
	return startFloor(url, features, false)
}

func startFloor(url string, features Feature, directReplyTo bool) (Contender, error) {
	f := &floor{has: features, directReplyTo: directReplyTo, queue: randomName("bench_floor_"), waiting: make(map[string]chan []byte)}
	conns := make([]*amqp.Connection, 2, 4)
	if f.has&SplitConnections != 0 {
		conns = conns[:4]
	}
	if f.has&NamedExchanges != 0 {
		f.reqX, f.repX = f.queue, f.queue+"_response"
	}
	for i := range conns {
		c, err := amqp.Dial(url)
		if err != nil {
			for _, c := range conns[:i] {
				_ = c.Close()
			}
			return nil, err
		}
		conns[i] = c
	}
	f.sconn, f.cconn, f.spub, f.cpub = conns[0], conns[1], conns[0], conns[1]
	if len(conns) == 4 {
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

// declareServer declares the request queue, and the exchanges if the
// floor uses named ones.
func (f *floor) declareServer(in *amqp.Channel) error {
	durable := f.has&DurableQueues != 0
	if _, err := in.QueueDeclare(f.queue, durable, !durable, !durable, false, nil); err != nil { // else exclusive
		return err
	}
	if f.reqX == "" {
		return nil
	}
	if err := in.ExchangeDeclare(f.reqX, "direct", false, true, false, false, nil); err != nil {
		return err
	}
	if err := in.ExchangeDeclare(f.repX, "direct", false, true, false, false, nil); err != nil {
		return err
	}
	return in.QueueBind(f.queue, f.queue, f.reqX, false, nil)
}

func (f *floor) startServer() error {
	in, err := f.sconn.Channel()
	if err != nil {
		return err
	}
	if err := f.declareServer(in); err != nil {
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
			if f.has&Properties != 0 {
				p.ContentType = d.ContentType // amqprpc's replies carry no type
			}
			// Nor an expiration: the deadline only drops a late reply
			// unsent (which never happens here).
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
	if f.directReplyTo {
		return f.startDirectReplyToClient()
	}
	ch, err := f.cconn.Channel()
	if err != nil {
		return err
	}
	var q amqp.Queue
	if f.has&DurableQueues != 0 {
		q, err = ch.QueueDeclare(f.queue+"_reply", true, false, false, false, amqp.Table{"x-expires": int64(300000)})
	} else {
		q, err = ch.QueueDeclare("", false, true, true, false, nil) // exclusive, server-named
	}
	if err == nil && f.repX != "" {
		err = ch.QueueBind(q.Name, q.Name, f.repX, false, nil)
	}
	acked := f.has&AckedReplies != 0
	if err == nil && acked {
		err = ch.Qos(1024, 0, false) // amqprpc's reply prefetch
	}
	if err != nil {
		return err
	}
	f.replyQ = q.Name
	replies, err := ch.Consume(q.Name, "", !acked, true, false, false, nil)
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
	f.receive(confirms, replies, acked)
	return nil
}

// startDirectReplyToClient consumes replies from amq.rabbitmq.reply-to,
// without acks as RabbitMQ requires, on the channel that publishes the
// requests.
func (f *floor) startDirectReplyToClient() error {
	var err error
	if f.pubCh, err = f.cpub.Channel(); err != nil {
		return err
	}
	const replyTo = "amq.rabbitmq.reply-to"
	replies, err := f.pubCh.Consume(replyTo, "", true, false, false, false, nil)
	if err != nil {
		return err
	}
	if err := f.pubCh.Confirm(false); err != nil {
		return err
	}
	f.replyQ = replyTo
	f.receive(f.pubCh.NotifyPublish(make(chan amqp.Confirmation, 1024)), replies, false)
	return nil
}

// receive drains the client's confirms and hands each reply to its caller,
// acking them every 64 if acked.
func (f *floor) receive(confirms <-chan amqp.Confirmation, replies <-chan amqp.Delivery, acked bool) {
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
			if n++; acked && n%64 == 0 {
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
}

func (f *floor) Call(ctx context.Context, body []byte) ([]byte, error) {
	id := strconv.FormatUint(f.seq.Add(1), 10)
	w := make(chan []byte, 1)
	f.mu.Lock()
	f.waiting[id] = w
	f.mu.Unlock()
	f.pubMu.Lock()
	p := amqp.Publishing{CorrelationId: id, ReplyTo: f.replyQ, Body: body}
	if f.has&Properties != 0 {
		p.ContentType, p.Type, p.MessageId = "application/msgpack", "Echo.Echo", id
	}
	if f.has&Expiration != 0 {
		p.Expiration = "30000"
	}
	err := f.pubCh.Publish(f.reqX, f.queue, f.has&Mandatory != 0, false, p)
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
	if f.has&DurableQueues != 0 && f.sconn != nil {
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
