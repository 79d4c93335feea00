package amqprpc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/transport"
)

// brokerConnections counts the broker's connections named name.
func brokerConnections(t *testing.T, name string) int {
	t.Helper()
	return strings.Count(brokertest.Rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "client_properties"), `"`+name+`"`)
}

// 50 clients and 50 servers of 50 namespaces share one transport.Conn: the
// broker sees 2 connections, not 200. When the broker drops them under
// load, every client and server resumes on the redialed pair: no call
// fails and no handler runs twice. Closing them leaves the Conn open.
func TestSharedConnection(t *testing.T) {
	name := "amqprpc shared " + brokertest.Namespace(t)
	conn, err := transport.Dial(brokertest.URL(), transport.Config{Name: name})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, conn.Close()) })

	const n = 50
	clients := make([]*Client, n)
	ledgers := make([]*Ledger, n)
	base := brokertest.Namespace(t)
	for i := range n {
		ns := fmt.Sprintf("%s_%d", base, i)
		t.Cleanup(func() { brokertest.DeleteNamespace(brokertest.URL(), ns) })
		ledgers[i] = new(Ledger)
		s, err := NewServer("", ns, newRPCServer(t, ledgers[i]), WithConnection(conn))
		require.NoError(t, err)
		brokertest.Serve(t, s.Serve, s.Close)
		clients[i], err = Dial("", ns, WithConnection(conn))
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, clients[i].Close()) })
	}
	assert.Equal(t, 2, brokerConnections(t, name))

	const callers = 16
	stop := runLoad(callers, func(g, j int) error {
		i := (g + j) % n
		if err := recordCall(clients[i], g, j); err != nil {
			return fmt.Errorf("client %d, %w", i, err)
		}
		return nil
	})
	time.Sleep(1500 * time.Millisecond)
	brokertest.Rabbitmqctl(t, "close_all_connections", "shared connection test")
	time.Sleep(2500 * time.Millisecond)
	res := stop()
	twice := 0
	for _, l := range ledgers {
		twice += l.ranMoreThanOnce()
	}
	t.Logf("%d calls by %d callers over %d clients and %d servers on one shared pair, with a connection drop: %d failed, %d ran twice",
		res.calls, callers, n, n, res.failed, twice)
	require.Zero(t, res.failed, "first failure: %v", res.first)
	assert.Zero(t, twice)
	assert.Equal(t, 2, brokerConnections(t, name), "redialed as a pair")

	// Closing a client leaves the connections to the others.
	require.NoError(t, clients[0].Close())
	var reply string
	require.NoError(t, clients[1].Call("Ledger.Record", "after", &reply))
	assert.Equal(t, 2, brokerConnections(t, name))

	_, err = Dial(brokertest.URL(), "x", WithConnection(conn))
	require.Error(t, err, "a url and a connection")
}
