package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// QueueOption configures a request queue made by Client.CreateRequestQueue.
type QueueOption func(*queueOptions) error

type queueOptions struct {
	expiry time.Duration
	key    *string
}

// WithQueueExpiry makes the broker delete the queue once it has had no
// consumer for d (the queue's x-expires), so that queues of users who went
// away do not pile up. Default: the queue lives until DeleteRequestQueue.
// Values under one millisecond or over RabbitMQ's 2^32-1 ms (about 49
// days; a larger x-expires fails the declaration) are an error; the latter
// matches [ErrTooLong]. A queue that exists already keeps its own
// expiry.
func WithQueueExpiry(d time.Duration) QueueOption {
	return func(o *queueOptions) error {
		if d < time.Millisecond {
			return fmt.Errorf("amqprpc: WithQueueExpiry(%v): must be at least 1ms", d)
		}
		if err := transport.CheckExpiry("WithQueueExpiry", d); err != nil {
			return err
		}
		o.expiry = d
		return nil
	}
}

// WithQueueRoutingKey binds the queue with key instead of its name, as
// amphora's create_new_request_queue(label, routing_key) does. Default: the
// queue's name. The empty key, which the main request queue is bound
// with, is an error, and so is a key over 255 bytes (matching
// [ErrTooLong]).
func WithQueueRoutingKey(key string) QueueOption {
	return func(o *queueOptions) error {
		if key == "" {
			// The main request queue's key: the queue would get a copy
			// of every call, run twice.
			return errors.New(`amqprpc: WithQueueRoutingKey(""): the empty key is the main request queue's`)
		}
		if err := transport.CheckName("routing key", key); err != nil {
			return err
		}
		o.key = &key
		return nil
	}
}

// extraQueue is the broker name of the extra request queue name.
func (n names) extraQueue(name string) (string, error) {
	if name == "" {
		return "", errors.New("amqprpc: empty queue name")
	}
	q := n.queuePrefix + name
	if err := transport.CheckName("queue name", q); err != nil {
		return "", err
	}
	return q, nil
}

// CreateRequestQueue declares the durable request queue
// rpc_<namespace>_queue_<name>, of the client's queue type (WithQueueType),
// bound to the request exchange with routing key name, and returns once it
// exists. Calls routed with that key (To, Tune) then wait there for a
// Server.ReceiveFromQueue. A queue that exists already is used as it is,
// whatever its type and options, and bound with the key. It blocks while
// the client reconnects, up to ctx. After Close it fails with
// rpc.ErrShutdown. Nil options are skipped.
func (c *Client) CreateRequestQueue(ctx context.Context, name string, opts ...QueueOption) error {
	var o queueOptions
	for _, opt := range opts {
		if opt == nil {
			continue
		}
		if err := opt(&o); err != nil {
			return err
		}
	}
	queue, err := c.codec.extraQueue(name)
	if err != nil {
		return err
	}
	key := name
	if o.key != nil {
		key = *o.key
	}
	args := amqp.Table{}
	for k, v := range c.codec.queueArgs {
		args[k] = v
	}
	if o.expiry > 0 {
		args["x-expires"] = o.expiry.Milliseconds()
	}
	if len(args) == 0 {
		args = nil
	}
	return c.onChannel(ctx, func(ch *amqp.Channel) error {
		return c.codec.declareRequestQueue(c.conn, ch, queue, key, args)
	})
}

// DeleteRequestQueue deletes the request queue made by CreateRequestQueue,
// with any calls still waiting in it. Deleting a queue that does not exist
// is not an error. It blocks while the client reconnects, up to ctx.
func (c *Client) DeleteRequestQueue(ctx context.Context, name string) error {
	queue, err := c.codec.extraQueue(name)
	if err != nil {
		return err
	}
	return c.onChannel(ctx, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			return fmt.Errorf("amqprpc: delete queue %s: %w", queue, err)
		}
		return nil
	})
}

// onChannel runs f on a fresh channel of the client's consuming
// connection; after Close it fails with rpc.ErrShutdown, as calls do.
func (c *Client) onChannel(ctx context.Context, f func(*amqp.Channel) error) error {
	if c.codec.isClosed() {
		return rpc.ErrShutdown
	}
	err := onChannel(ctx, c.conn, f)
	if errors.Is(err, transport.ErrClosed) {
		return rpc.ErrShutdown
	}
	return err
}
