package transport

import (
	"fmt"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
)

// recorder is an amqp.Acknowledger that writes down what it is asked.
type recorder struct{ calls []string }

func (r *recorder) Ack(tag uint64, multiple bool) error {
	r.calls = append(r.calls, fmt.Sprintf("ack %d multiple=%v", tag, multiple))
	return nil
}
func (r *recorder) Nack(tag uint64, multiple, requeue bool) error { return nil }
func (r *recorder) Reject(tag uint64, requeue bool) error         { return nil }

func TestAckerMergesABurst(t *testing.T) {
	ch := &recorder{}
	a := NewAcker()
	d := make([]amqp.Delivery, 7)
	for i := range d {
		d[i] = amqp.Delivery{Acknowledger: ch, DeliveryTag: uint64(i + 1)}
		a.Take(&d[i])
	}
	end := a.Burst()
	a.Ack(&d[1])     // 2
	a.Ack(&d[0])     // 1
	a.Settled(&d[2]) // 3 was nacked elsewhere
	a.Ack(&d[3])     // 4
	a.Ack(&d[5])     // 6, behind 5 which is still being handled
	assert.Empty(t, ch.calls, "nothing is sent during the burst")
	end()
	assert.Equal(t, []string{"ack 4 multiple=true", "ack 6 multiple=false"}, ch.calls)

	ch.calls = nil
	a.Ack(&d[4]) // 5, outside a burst: at once; 6 is already acked
	assert.Equal(t, []string{"ack 5 multiple=true"}, ch.calls)
	ch.calls = nil
	a.Ack(&d[6])
	assert.Equal(t, []string{"ack 7 multiple=true"}, ch.calls)
	assert.Empty(t, a.chans, "nothing outstanding is left")
}

func TestAckerKeepsChannelsApart(t *testing.T) {
	old, cur := &recorder{}, &recorder{}
	a := NewAcker()
	d1 := amqp.Delivery{Acknowledger: old, DeliveryTag: 9}
	d2 := amqp.Delivery{Acknowledger: cur, DeliveryTag: 1}
	a.Take(&d1)
	a.Take(&d2)
	end := a.Burst()
	a.Ack(&d2)
	a.Ack(&d1)
	end()
	assert.Equal(t, []string{"ack 9 multiple=true"}, old.calls)
	assert.Equal(t, []string{"ack 1 multiple=true"}, cur.calls)
}
