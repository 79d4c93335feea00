package transport

import (
	"fmt"
	"testing"
	"time"

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

// Sync returns only once the acks of an open burst have been sent, so that
// a channel closed after it cannot overtake them.
func TestAckerSyncWaitsForTheBurst(t *testing.T) {
	ch := &recorder{}
	a := NewAcker()
	d := amqp.Delivery{Acknowledger: ch, DeliveryTag: 1}
	a.Take(&d)
	end := a.Burst()
	a.Ack(&d)
	synced := make(chan struct{})
	go func() { a.Sync(); close(synced) }()
	select {
	case <-synced:
		t.Fatal("Sync returned during the burst")
	case <-time.After(50 * time.Millisecond):
	}
	end()
	<-synced
	assert.Equal(t, []string{"ack 1 multiple=true"}, ch.calls)
	a.Sync() // no burst: returns at once
}

// Behind one slow delivery, the deliveries done are acked and forgotten:
// what is kept is what is still being handled.
func TestAckerForgetsWhatIsDoneBehindASlowDelivery(t *testing.T) {
	ch := &recorder{}
	a := NewAcker()
	d := make([]amqp.Delivery, 1000)
	for i := range d {
		d[i] = amqp.Delivery{Acknowledger: ch, DeliveryTag: uint64(i + 1)}
		a.Take(&d[i])
	}
	for i := 1; i < len(d); i++ { // all but the first
		if i%2 == 0 {
			a.Settled(&d[i])
		} else {
			a.Ack(&d[i])
		}
	}
	o := a.chans[ch]
	assert.Equal(t, []uint64{1}, o.tags)
	assert.Len(t, o.state, 0)
	assert.Len(t, ch.calls, 500, "one single ack per acked delivery")
	ch.calls = nil
	a.Ack(&d[0])
	assert.Equal(t, []string{"ack 1 multiple=true"}, ch.calls)
	assert.Empty(t, a.chans)
}
