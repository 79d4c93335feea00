package transport

import (
	"context"
	"fmt"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Confirmed is called once per published message with the broker's verdict:
// ack true when the broker took responsibility for the message, false when it
// refused it or when the channel closed before it answered. It runs on the
// publisher's confirm goroutine and must not block.
type Confirmed func(ack bool)

// Publisher publishes on one confirm-mode channel and hands each broker
// confirm to the callback given with the message, without anyone waiting for
// it: publishing never blocks on a confirm. It is safe for concurrent use.
type Publisher struct {
	ch       *amqp.Channel
	confirms chan amqp.Confirmation
	done     chan struct{} // closed when the confirm goroutine has ended

	mu sync.Mutex
	// protects the publish order and pending: pending[i] belongs to the
	// delivery tag of the i-th unconfirmed message, since tags are consecutive.
	pending []Confirmed
	closed  bool
}

// NewPublisher opens a channel on conn and puts it in confirm mode.
func NewPublisher(conn *amqp.Connection) (*Publisher, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqprpc: open publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("amqprpc: confirm mode: %w", err)
	}
	p := &Publisher{
		ch:       ch,
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 256)),
		done:     make(chan struct{}),
	}
	go p.loop()
	return p, nil
}

// Publish sends msg and returns once it is written to the connection; onConfirm
// (which may be nil) is called later with the broker's confirm. An error means
// the message was not sent and onConfirm will not be called.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, mandatory bool, msg amqp.Publishing, onConfirm Confirmed) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return amqp.ErrClosed
	}
	if err := p.ch.PublishWithContext(ctx, exchange, key, mandatory, false, msg); err != nil {
		return fmt.Errorf("amqprpc: publish: %w", err)
	}
	p.pending = append(p.pending, onConfirm)
	return nil
}

// loop hands out confirms in delivery-tag order (amqp091-go resequences
// them and splits multiple acks); it ends when the channel closes and then
// fails whatever is still unconfirmed.
func (p *Publisher) loop() {
	defer close(p.done)
	for c := range p.confirms {
		p.mu.Lock()
		var cb Confirmed
		if len(p.pending) > 0 {
			cb = p.pending[0]
			p.pending[0] = nil
			p.pending = p.pending[1:]
		}
		p.mu.Unlock()
		if cb != nil {
			cb(c.Ack)
		}
	}
	p.mu.Lock()
	rest := p.pending
	p.pending = nil
	p.closed = true
	p.mu.Unlock()
	for _, cb := range rest {
		if cb != nil {
			cb(false)
		}
	}
}

// Close closes the channel and waits until every callback has run: those
// still unconfirmed get false. Unconfirmed messages may still have reached
// the broker.
func (p *Publisher) Close() error {
	err := p.ch.Close()
	<-p.done
	if err != nil && err != amqp.ErrClosed {
		return fmt.Errorf("amqprpc: close publish channel: %w", err)
	}
	return nil
}

// Done is closed once the publisher's channel has closed and every pending
// callback has run.
func (p *Publisher) Done() <-chan struct{} { return p.done }
