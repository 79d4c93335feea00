package amqprpc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/transport"
)

// brokerConnections counts the broker's connections named name.
func brokerConnections(t *testing.T, name string) int {
	t.Helper()
	return strings.Count(rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "client_properties"), `"`+name+`"`)
}

// 50 clients and 50 servers of 50 namespaces share one transport.Conn: the
// broker sees 2 connections, not 200. When the broker drops them under
// load, every client and server resumes on the redialed pair: no call
// fails and no handler runs twice. Closing them leaves the Conn open.
func TestSharedConnection(t *testing.T) {
	name := "amqprpc shared " + testNamespace(t)
	conn, err := transport.Dial(brokerURL(), transport.Config{Name: name})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })

	const n = 50
	clients := make([]*Client, n)
	ledgers := make([]*Ledger, n)
	for i := range n {
		ns := fmt.Sprintf("%s_%d", testNamespace(t), i)
		ledgers[i] = new(Ledger)
		s, err := NewServer("", ns, newRPCServer(t, ledgers[i]), WithConnection(conn))
		require.NoError(t, err)
		serveUntilEnd(t, s.Serve, s.Close)
		clients[i], err = Dial("", ns, WithConnection(conn))
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, clients[i].Close()) })
	}
	assert.Equal(t, 2, brokerConnections(t, name))

	const callers = 16
	var (
		calls, failed atomic.Int64
		firstErr      atomic.Value
		stop          = make(chan struct{})
		wg            sync.WaitGroup
	)
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (g + j) % n
				id := fmt.Sprintf("%d-%d", g, j)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var reply string
				err := clients[i].CallContext(ctx, "Ledger.Record", id, &reply)
				cancel()
				calls.Add(1)
				if err != nil || reply != id {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("client %d, %s: %v", i, id, err))
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	rabbitmqctl(t, "close_all_connections", "shared connection test")
	time.Sleep(2500 * time.Millisecond)
	close(stop)
	wg.Wait()
	twice := 0
	for _, l := range ledgers {
		for _, k := range l.counts() {
			if k != 1 {
				twice++
			}
		}
	}
	t.Logf("%d calls by %d callers over %d clients and %d servers on one shared pair, with a connection drop: %d failed, %d ran twice",
		calls.Load(), callers, n, n, failed.Load(), twice)
	require.Zero(t, failed.Load(), "first failure: %v", firstErr.Load())
	assert.Zero(t, twice)
	assert.Equal(t, 2, brokerConnections(t, name), "redialed as a pair")

	// Closing a client leaves the connections to the others.
	require.NoError(t, clients[0].Close())
	var reply string
	require.NoError(t, clients[1].Call("Ledger.Record", "after", &reply))
	assert.Equal(t, 2, brokerConnections(t, name))

	_, err = Dial(brokerURL(), "x", WithConnection(conn))
	require.Error(t, err, "a url and a connection")
}
