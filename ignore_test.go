package amqprpc

import (
	"context"
	"net/rpc"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Picky answers only when it is willing to.
type Picky struct {
	name    string
	willing bool
	seen    atomic.Int32
}

func (p *Picky) Take(arg string, reply *string) error {
	p.seen.Add(1)
	if !p.willing {
		return ErrIgnoreRequest
	}
	*reply = p.name
	return nil
}

// A request one direct server ignores is taken by another.
func TestIgnoredRequestGoesToAnotherServer(t *testing.T) {
	ns := testNamespace(t)
	startServer(t, ns, newRPCServer(t, &Picky{name: "no"}))
	startServer(t, ns, newRPCServer(t, &Picky{name: "yes", willing: true}))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := 0; i < 4; i++ {
		var reply string
		require.NoError(t, c.CallContext(ctx, "Picky.Take", "x", &reply))
		assert.Equal(t, "yes", reply)
	}
}

// When every server ignores a request, the caller hears so after a bounded
// number of tries instead of waiting forever, and the queue is left empty.
func TestRequestIgnoredByEveryServer(t *testing.T) {
	ns := testNamespace(t)
	p := &Picky{name: "no"}
	startServer(t, ns, newRPCServer(t, p))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reply string
	err := c.CallContext(ctx, "Picky.Take", "x", &reply)
	var se rpc.ServerError
	require.ErrorAs(t, err, &se)
	assert.Contains(t, string(se), "no server took the request")
	assert.Equal(t, int32(ignoreLimit), p.seen.Load())
	require.Eventually(t, func() bool { return queueDepth(t, "rpc_"+ns+"_request") == 0 }, 5*time.Second, 10*time.Millisecond)
}
