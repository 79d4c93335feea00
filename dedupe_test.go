package amqprpc

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The reply cache keeps the newest replies within its byte budget, and
// forgets replies with their window; calls stay known as answered while
// their window lasts.
func TestDedupeReplyBudget(t *testing.T) {
	d := newDedupe(time.Hour, 4*(96+100))
	body := make([]byte, 100)
	for k := uint64(1); k <= 10; k++ {
		v, _ := d.begin(k, nil)
		assert.Equal(t, runIt, v)
		d.finish(k, true, &reply{body: body})
	}
	assert.LessOrEqual(t, d.keptSize, d.budget)
	for k := uint64(1); k <= 10; k++ {
		v, r := d.begin(k, nil)
		assert.Equal(t, answered, v, "call %d", k)
		assert.Equal(t, k > 6, r != nil, "call %d: only the 4 newest kept", k)
	}
	// Too large for the budget (over a quarter): known, not kept.
	d.finish(11, true, &reply{body: make([]byte, 1000)})
	_, r := d.begin(11, nil)
	assert.Nil(t, r)

	// Two windows later every call and reply is forgotten.
	d.rotated = time.Now().Add(-2 * time.Hour)
	d.begin(100, nil)
	d.rotated = time.Now().Add(-2 * time.Hour)
	v, _ := d.begin(10, nil)
	assert.Equal(t, runIt, v)
	assert.Equal(t, 0, d.keptSize, "replies dropped with their window")
	assert.Empty(t, d.kept[d.keptHead:])
}
