package amqprpc

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

func (l *timeoutList) seqs() []uint64 {
	var out []uint64
	for p := l.head; p != nil; p = p.next {
		out = append(out, p.seq)
	}
	return out
}

func TestTimeoutList(t *testing.T) {
	var l timeoutList
	calls := make([]*pendingCall, 5)
	for i := range calls {
		calls[i] = &pendingCall{seq: uint64(i)}
		l.push(calls[i])
	}
	assert.Equal(t, []uint64{0, 1, 2, 3, 4}, l.seqs())

	l.remove(calls[2]) // middle
	l.remove(calls[0]) // head
	l.remove(calls[4]) // tail
	l.remove(calls[4]) // again: no-op
	l.remove(&pendingCall{seq: 9})
	assert.Equal(t, []uint64{1, 3}, l.seqs())
	assert.Equal(t, calls[3], l.tail)

	l.remove(calls[1])
	l.remove(calls[3])
	assert.Nil(t, l.head)
	assert.Nil(t, l.tail)
	l.push(calls[2])
	assert.Equal(t, []uint64{2}, l.seqs())
}

// A call held for an unavailable queue fails at its deadline, or when its
// context ends, with an error that says so and matches the context error;
// other failures are left as they are.
func TestHeldCallErrors(t *testing.T) {
	held := &pendingCall{heldFor: "rpc_ns_request"}
	for _, cause := range []error{errTimedOut, context.DeadlineExceeded, context.Canceled} {
		err := endedWaiting(held, cause)
		assert.ErrorIs(t, err, ErrQueueUnavailable)
		assert.ErrorIs(t, err, cause)
		assert.Contains(t, err.Error(), "request queue rpc_ns_request is unavailable")
	}
	assert.Equal(t, ErrRefused, endedWaiting(held, ErrRefused))
	assert.Equal(t, errTimedOut, endedWaiting(&pendingCall{}, errTimedOut))
	assert.NotErrorIs(t, endedWaiting(&pendingCall{}, errTimedOut), ErrQueueUnavailable)
}
