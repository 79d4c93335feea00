package transport

import (
	"errors"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// AMQP 0-9-1 has one reply code, 404 NOT_FOUND, for a queue that does not
// exist and for one that exists but cannot be reached: a classic queue
// whose node is down, or whose process crashed or stopped. RabbitMQ's
// reply texts tell them apart: "no queue 'q' in vhost '/'" for the first
// (rabbit_misc:not_found), and for the second "home node 'n' of durable
// queue 'q' in vhost '/' is down or inaccessible" or a text saying that
// it crashed, stopped or timed out (rabbit_amqqueue:absent). Both texts
// are the same on RabbitMQ 3.10 and 4.3, which the tests run on. A
// queue.declare that is not passive would create a missing queue, so its
// 404 always means the second.

// QueueMissing reports whether err is the broker's 404 for a queue that
// does not exist.
func QueueMissing(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound && strings.Contains(ae.Reason, "no queue")
}

// QueueDown reports whether err is the broker's 404 for a queue that
// exists but cannot be reached now: its node is down (a classic queue
// lives on one node), or its process crashed or stopped.
func QueueDown(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound && strings.Contains(ae.Reason, "queue") &&
		!strings.Contains(ae.Reason, "no queue")
}
