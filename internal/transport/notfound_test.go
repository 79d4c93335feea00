package transport

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
)

// The reply texts as RabbitMQ 3.10.8 sent them on the test cluster (a
// durable classic queue whose node was stopped, and a missing one); 4.3
// sends the same for a missing queue (TestNoRoute* pass on it).
func TestQueueMissingOrDown(t *testing.T) {
	down := &amqp.Error{Code: amqp.NotFound, Server: true,
		Reason: "NOT_FOUND - home node 'rabbit-c3@localhost' of durable queue 'q404' in vhost '/' is down or inaccessible"}
	missing := &amqp.Error{Code: amqp.NotFound, Server: true, Reason: "NOT_FOUND - no queue 'nope' in vhost '/'"}
	noExchange := &amqp.Error{Code: amqp.NotFound, Server: true, Reason: "NOT_FOUND - no exchange 'x' in vhost '/'"}
	refused := &amqp.Error{Code: amqp.AccessRefused, Server: true, Reason: "ACCESS_REFUSED - queue 'q' in vhost '/'"}
	for _, c := range []struct {
		err           error
		missing, down bool
	}{
		{down, false, true},
		{fmt.Errorf("consume q404: %w", down), false, true},
		{missing, true, false},
		{fmt.Errorf("look up: %w", missing), true, false},
		{noExchange, false, false},
		{refused, false, false},
		{amqp.ErrClosed, false, false},
		{nil, false, false},
	} {
		assert.Equal(t, c.missing, QueueMissing(c.err), "QueueMissing(%v)", c.err)
		assert.Equal(t, c.down, QueueDown(c.err), "QueueDown(%v)", c.err)
	}
}

// A retry loop that keeps failing warns at once, then once per
// retryLogEvery with the tries counted, and at once again after a success.
func TestRetryLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var r retryLog
	for range 5 {
		r.failed(log, "retrying", "queue", "q")
	}
	assert.Equal(t, 1, strings.Count(buf.String(), "level=WARN"), buf.String())
	assert.Contains(t, buf.String(), "tries=1")

	r.last = r.last.Add(-retryLogEvery - time.Second) // as if 30 s had passed
	r.failed(log, "retrying", "queue", "q")
	assert.Equal(t, 2, strings.Count(buf.String(), "level=WARN"), buf.String())
	assert.Contains(t, buf.String(), `msg="retrying (still failing)" queue=q tries=5`)

	r.ok()
	r.failed(log, "retrying", "queue", "q")
	assert.Equal(t, 3, strings.Count(buf.String(), "level=WARN"), buf.String())
}
