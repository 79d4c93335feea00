package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// names are the broker objects of one namespace, as documented in amqprpc.go.
type names struct {
	namespace        string
	fanout           bool   // the request exchange is of type fanout
	requestExchange  string // rpc_<ns>_request
	responseExchange string // rpc_<ns>_response
	requestQueue     string // rpc_<ns>_request
	queuePrefix      string // rpc_<ns>_queue_, of extra request queues
	// queueArgs are the arguments of the request queues this side
	// creates (WithQueueType); queues that exist are adopted as they are.
	queueArgs amqp.Table
}

func newNames(namespace string, o *options) (names, error) {
	if namespace == "" {
		return names{}, errors.New("amqprpc: empty namespace")
	}
	if len(namespace) > 200 {
		return names{}, errors.New("amqprpc: namespace longer than 200 bytes")
	}
	fanout := o.fanout
	var args amqp.Table
	if o.queueType != "" {
		args = amqp.Table{"x-queue-type": string(o.queueType)}
		if o.queueType == QuorumQueue {
			args["x-delivery-limit"] = int64(o.deliveryLimit)
		}
	}
	return names{
		queueArgs:        args,
		namespace:        namespace,
		fanout:           fanout,
		requestExchange:  "rpc_" + namespace + "_request",
		responseExchange: "rpc_" + namespace + "_response",
		requestQueue:     "rpc_" + namespace + "_request",
		queuePrefix:      "rpc_" + namespace + "_queue_",
	}, nil
}

// replyQueue is the name of client id's reply queue.
func (n names) replyQueue(id string) string {
	return "rpc_" + n.namespace + "_" + id + "_response"
}

// fanoutQueue is the name of fanout server id's own request queue.
func (n names) fanoutQueue(id string) string {
	return "rpc_" + n.namespace + "_fanout_" + id
}

// exchangeKind is the type of the request exchange.
func (n names) exchangeKind() string {
	if n.fanout {
		return amqp.ExchangeFanout
	}
	return amqp.ExchangeDirect
}

// requestSide returns a setup function that declares both exchanges and,
// for a direct namespace, the main request queue, bound with key "": what a
// server consumes and what a client's first call needs to wait in. A
// fanout namespace has no shared queue: each server declares its own
// (declareFanoutQueue). conn, if not nil, is asked first whether the queue
// exists, which is then used as it is (see declareRequestQueue).
func (n names) requestSide(conn *transport.Conn) func(*amqp.Channel) error {
	return func(ch *amqp.Channel) error {
		if err := n.declareExchanges(ch); err != nil {
			return err
		}
		if n.fanout {
			return nil
		}
		return n.declareRequestQueue(conn, ch, n.requestQueue, "", n.queueArgs)
	}
}

// declareRequestQueue declares request queue, durable, with args, and binds
// it to the request exchange with key. A queue that exists already is
// adopted whatever its type and arguments, so that operators can declare
// it first (a quorum queue, say) or set a default queue type on the vhost:
// declaring it again with other arguments would fail with 406
// PRECONDITION_FAILED. A queue whose node is down is left as it is: it
// comes back, with its binding, when its node does. Whether it exists is
// asked on a channel of conn's own, because a passive declare of a missing
// queue closes its channel; with conn nil the queue is declared without
// asking.
func (n names) declareRequestQueue(conn *transport.Conn, ch *amqp.Channel, queue, key string, args amqp.Table) error {
	state := queueAbsent
	if conn != nil {
		var err error
		if state, err = lookUpQueue(conn, queue); err != nil {
			return err
		}
	}
	switch state {
	case queueUnavailable:
		return nil
	case queueAbsent:
		if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
			return fmt.Errorf("amqprpc: declare queue %s: %w", queue, err)
		}
	}
	if err := ch.QueueBind(queue, key, n.requestExchange, false, nil); err != nil {
		return fmt.Errorf("amqprpc: bind queue %s: %w", queue, err)
	}
	return nil
}

// queueState is what lookUpQueue finds.
type queueState int

const (
	queueAbsent queueState = iota
	queueReady
	queueUnavailable // it exists, but its node is down (see transport.QueueDown)
)

// lookUpQueue says whether queue exists, and if so whether it can be
// reached, asking with a passive declare on a channel of its own.
func lookUpQueue(conn *transport.Conn, queue string) (queueState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var declared error // the broker's answer
	err := onChannel(ctx, conn, func(ch *amqp.Channel) error {
		_, declared = ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		return nil
	})
	if err != nil {
		return 0, err
	}
	err = declared
	switch {
	case err == nil:
		return queueReady, nil
	case transport.QueueMissing(err):
		return queueAbsent, nil
	case transport.QueueDown(err):
		return queueUnavailable, nil
	}
	return 0, fmt.Errorf("amqprpc: look up queue %s: %w", queue, err)
}

// declareExchanges declares the request and response exchanges: what a
// publisher needs before its first message on a channel.
func (n names) declareExchanges(ch *amqp.Channel) error {
	if err := ch.ExchangeDeclare(n.requestExchange, n.exchangeKind(), true, false, false, false, nil); err != nil {
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			return fmt.Errorf("%w: exchange %s exists with a type other than %s, so namespace %q already serves %s calls: %w",
				ErrNamespaceConflict, n.requestExchange, n.exchangeKind(), n.namespace, otherKind(n.fanout), err)
		}
		return fmt.Errorf("amqprpc: declare exchange %s: %w", n.requestExchange, err)
	}
	if err := ch.ExchangeDeclare(n.responseExchange, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqprpc: declare exchange %s: %w", n.responseExchange, err)
	}
	return nil
}

func otherKind(fanout bool) string {
	if fanout {
		return "direct (non-fanout)"
	}
	return "fanout"
}

// declareFanoutQueue declares fanout server id's own queue, durable so that
// broadcasts wait in it through a reconnection, deleted by the broker after
// expiry without consumer, and bound to the request exchange.
func (n names) declareFanoutQueue(ch *amqp.Channel, id string, expiry time.Duration) error {
	queue := n.fanoutQueue(id)
	args := amqp.Table{"x-expires": int64(expiry / time.Millisecond)}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("amqprpc: declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "", n.requestExchange, false, nil); err != nil {
		return fmt.Errorf("amqprpc: bind queue %s: %w", queue, err)
	}
	return nil
}

// declareReplyQueue declares a client's durable reply queue, which the broker
// deletes after expiry without a consumer, and binds it with key id.
func (n names) declareReplyQueue(ch *amqp.Channel, queue, id string, expiry time.Duration) error {
	args := amqp.Table{"x-expires": int64(expiry / time.Millisecond)}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("amqprpc: declare queue %s: %w", queue, err)
	}
	if err := ch.QueueBind(queue, id, n.responseExchange, false, nil); err != nil {
		return fmt.Errorf("amqprpc: bind queue %s: %w", queue, err)
	}
	return nil
}
