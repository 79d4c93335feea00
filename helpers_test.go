package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/rpc"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/require"
)

// Math is the tutorial's service.
type Math struct{}

type Pair struct{ A, B float64 }

func (*Math) SumNumbers(nums []int, sum *int) error {
	for _, n := range nums {
		*sum += n
	}
	return nil
}

func (*Math) Hypotenuse(p Pair, h *float64) error {
	if p.A < 0 || p.B < 0 {
		return fmt.Errorf("negative cathetus: %v", p)
	}
	*h = math.Sqrt(p.A*p.A + p.B*p.B)
	return nil
}

// Gate is a service whose calls block until the test opens the gate.
type Gate struct {
	entered chan string
	release chan struct{}
	ran     atomic.Int32
}

func newGate() *Gate {
	return &Gate{entered: make(chan string, 1000), release: make(chan struct{})}
}

func (g *Gate) Wait(arg string, reply *string) error {
	g.ran.Add(1)
	g.entered <- arg
	<-g.release
	*reply = "done " + arg
	return nil
}

// Barrier is a service whose calls each wait until n calls are inside at
// once: it fails unless the server runs n handlers concurrently.
type Barrier struct {
	n    int
	mu   sync.Mutex
	in   int
	max  int
	full chan struct{}
}

func newBarrier(n int) *Barrier { return &Barrier{n: n, full: make(chan struct{})} }

func (b *Barrier) Meet(who string, reply *string) error {
	b.mu.Lock()
	b.in++
	if b.in > b.max {
		b.max = b.in
	}
	if b.in == b.n {
		close(b.full)
	}
	b.mu.Unlock()
	defer func() { b.mu.Lock(); b.in--; b.mu.Unlock() }()
	select {
	case <-b.full:
		*reply = who
		return nil
	case <-time.After(20 * time.Second):
		return errors.New("barrier: not enough concurrent calls")
	}
}

// newRPCServer registers rcvrs on a fresh rpc.Server.
func newRPCServer(t testing.TB, rcvrs ...any) *rpc.Server {
	t.Helper()
	s := rpc.NewServer()
	for _, r := range rcvrs {
		require.NoError(t, s.Register(r))
	}
	return s
}

// startServer runs a Server for rcvr on ns until t ends, and checks that its
// Serve returned nil.
func startServer(t testing.TB, ns string, rcvr *rpc.Server, opts ...Option) *Server {
	t.Helper()
	s, err := NewServer(brokertest.URL(), ns, rcvr, opts...)
	require.NoError(t, err)
	brokertest.Serve(t, s.Serve, s.Close)
	return s
}

// dial returns a Client of ns, closed when t ends.
func dial(t testing.TB, ns string, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(brokertest.URL(), ns, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	return c
}

// loadResult is what runLoad's callers did.
type loadResult struct {
	calls, failed int64
	first         error // the first failure
}

// runLoad starts callers goroutines that each call call(g, j) for j = 0,
// 1, ... until stop is called; stop waits for them and returns the counts.
func runLoad(callers int, call func(g, j int) error) (stop func() loadResult) {
	var (
		calls, failed atomic.Int64
		first         atomic.Pointer[error]
		done          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-done:
					return
				default:
				}
				calls.Add(1)
				if err := call(g, j); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	return func() loadResult {
		close(done)
		wg.Wait()
		r := loadResult{calls: calls.Load(), failed: failed.Load()}
		if p := first.Load(); p != nil {
			r.first = *p
		}
		return r
	}
}

// recordCall is a runLoad call of Ledger.Record through c, with id
// "<g>-<j>": an error unless it got its own id back.
func recordCall(c *Client, g, j int) error {
	id := fmt.Sprintf("%d-%d", g, j)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var reply string
	if err := c.CallContext(ctx, "Ledger.Record", id, &reply); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	if reply != id {
		return fmt.Errorf("%s: reply %q", id, reply)
	}
	return nil
}
