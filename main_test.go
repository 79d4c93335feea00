package amqprpc

import (
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// brokerURL is where the integration tests find RabbitMQ: AMQP_URL, or a
// local broker with the default guest account.
func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

var brokerErr error // nil when the broker answered at start

func TestMain(m *testing.M) {
	flag.Parse()
	conn, err := amqp.DialConfig(brokerURL(), amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err == nil {
		_ = conn.Close()
	}
	brokerErr = err
	if err != nil {
		if os.Getenv("AMQPRPC_REQUIRE_BROKER") == "1" {
			fmt.Fprintf(os.Stderr, "amqprpc: AMQPRPC_REQUIRE_BROKER=1 but no broker at %s: %v\n", transport.Redact(brokerURL()), err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "amqprpc: no broker at %s (%v): integration tests and examples are skipped; `make test` starts one\n",
			transport.Redact(brokerURL()), err)
		_ = flag.Set("test.skip", "^Example")
	}
	os.Exit(m.Run())
}

// needBroker skips t when there is no broker (TestMain already failed the
// run when one is required).
func needBroker(t testing.TB) {
	t.Helper()
	if brokerErr != nil {
		t.Skip("no broker: ", brokerErr)
	}
}

// testNamespace returns a namespace of t's own and removes its broker
// objects when t ends.
func testNamespace(t testing.TB) string {
	t.Helper()
	needBroker(t)
	ns := "test_" + randomHex(4)
	t.Cleanup(func() { deleteNamespace(t, ns) })
	return ns
}

func deleteNamespace(t testing.TB, ns string) {
	conn, err := amqp.Dial(brokerURL())
	if err != nil {
		t.Logf("cleanup of %s: %v", ns, err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	n, _ := newNames(ns)
	_, _ = ch.QueueDelete(n.requestQueue, false, false, false)
	_ = ch.ExchangeDelete(n.requestExchange, false, false)
	_ = ch.ExchangeDelete(n.responseExchange, false, false)
}

// rawChannel is a plain amqp091-go channel for looking at and forging
// messages, closed when t ends.
func rawChannel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(brokerURL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// queueDepth is the number of ready messages in queue.
func queueDepth(t testing.TB, queue string) int {
	t.Helper()
	ch := rawChannel(t)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}
