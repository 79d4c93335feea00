package amqprpc

import (
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// names are the broker objects of one namespace, as documented in doc.go.
type names struct {
	requestExchange  string // rpc_<ns>_request
	responseExchange string // rpc_<ns>_response
	requestQueue     string // rpc_<ns>_request
	queuePrefix      string // rpc_<ns>_queue_, of extra request queues
}

func newNames(namespace string) (names, error) {
	if namespace == "" {
		return names{}, errors.New("amqprpc: empty namespace")
	}
	if len(namespace) > 200 {
		return names{}, errors.New("amqprpc: namespace longer than 200 bytes")
	}
	return names{
		requestExchange:  "rpc_" + namespace + "_request",
		responseExchange: "rpc_" + namespace + "_response",
		requestQueue:     "rpc_" + namespace + "_request",
		queuePrefix:      "rpc_" + namespace + "_queue_",
	}, nil
}

// replyQueue is the name of client id's reply queue.
func (n names) replyQueue(namespace, id string) string {
	return "rpc_" + namespace + "_" + id + "_response"
}

// declareRequestSide declares both exchanges and the main request queue, bound
// with key "": what a server consumes and what a client's first call needs to
// wait in.
func (n names) declareRequestSide(ch *amqp.Channel) error {
	if err := n.declareExchanges(ch); err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(n.requestQueue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("amqprpc: declare queue %s: %w", n.requestQueue, err)
	}
	if err := ch.QueueBind(n.requestQueue, "", n.requestExchange, false, nil); err != nil {
		return fmt.Errorf("amqprpc: bind queue %s: %w", n.requestQueue, err)
	}
	return nil
}

// declareExchanges declares the request and response exchanges: what a
// publisher needs before its first message on a channel.
func (n names) declareExchanges(ch *amqp.Channel) error {
	for _, ex := range []string{n.requestExchange, n.responseExchange} {
		if err := ch.ExchangeDeclare(ex, amqp.ExchangeDirect, true, false, false, false, nil); err != nil {
			return fmt.Errorf("amqprpc: declare exchange %s: %w", ex, err)
		}
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
