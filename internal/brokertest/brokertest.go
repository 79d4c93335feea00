// Package brokertest holds what the integration tests of every package need
// to use the real RabbitMQ: its URL, the skip-or-fail rule, namespaces of
// their own, a raw channel, and rabbitmqctl for faults.
package brokertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// URL is where the integration tests find RabbitMQ: AMQP_URL, or a local
// broker with the default guest account.
func URL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

var brokerErr error // nil when the broker answered at start

// Main is TestMain for packages with integration tests. Without a broker it
// fails the run when AMQPRPC_REQUIRE_BROKER=1 (make test, CI), and otherwise
// says once that integration tests and examples are skipped.
func Main(m *testing.M) {
	flag.Parse()
	conn, err := amqp.DialConfig(URL(), amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
	if err == nil {
		_ = conn.Close()
	}
	brokerErr = err
	if err != nil {
		if os.Getenv("AMQPRPC_REQUIRE_BROKER") == "1" {
			fmt.Fprintf(os.Stderr, "amqprpc: AMQPRPC_REQUIRE_BROKER=1 but no broker at %s: %v\n", transport.Redact(URL()), err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "amqprpc: no broker at %s (%v): integration tests and examples are skipped; `make test` starts one\n",
			transport.Redact(URL()), err)
		_ = flag.Set("test.skip", "^Example")
	}
	code := m.Run()
	if err == nil {
		deleteExampleObjects()
	}
	os.Exit(code)
}

// deleteExampleObjects deletes the queues and exchanges that the godoc
// examples made (their namespaces start with "example"), so that a test
// run leaves the broker as it found it. The examples cannot clean up
// themselves without cluttering what they show. Best effort: without
// rabbitmqctl nothing is listed and nothing deleted.
func deleteExampleObjects() {
	list := func(what string) []string {
		cmd := ctlCommand(what, "-q", "--no-table-headers", "name")
		out, err := exec.Command(cmd[0], cmd[1:]...).Output()
		if err != nil {
			return nil
		}
		var names []string
		for _, line := range strings.Split(string(out), "\n") {
			if name := strings.TrimSpace(line); strings.HasPrefix(name, "rpc_example") {
				names = append(names, name)
			}
		}
		return names
	}
	queues, exchanges := list("list_queues"), list("list_exchanges")
	if len(queues)+len(exchanges) == 0 {
		return
	}
	onChannel(URL(), func(ch *amqp.Channel) {
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		for _, x := range exchanges {
			_ = ch.ExchangeDelete(x, false, false)
		}
	})
}

// ctlCommand is the rabbitmqctl command line with args: see Rabbitmqctl.
func ctlCommand(args ...string) []string {
	cmd := strings.Fields(os.Getenv("AMQPRPC_RABBITMQCTL"))
	if len(cmd) == 0 {
		path, err := exec.LookPath("rabbitmqctl")
		if err != nil {
			path = "/usr/sbin/rabbitmqctl"
		}
		cmd = []string{path}
	}
	return append(cmd, args...)
}

// Need skips t when there is no broker (Main already failed the run when
// one is required).
func Need(t testing.TB) {
	t.Helper()
	if brokerErr != nil {
		t.Skip("no broker: ", brokerErr)
	}
}

// Namespace returns a namespace of t's own and deletes its request and
// response exchanges and main request queue when t ends.
func Namespace(t testing.TB) string {
	t.Helper()
	Need(t)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "test_" + hex.EncodeToString(b)
	t.Cleanup(func() { DeleteNamespace(URL(), ns) })
	return ns
}

// DeleteNamespace deletes ns's main request queue and its exchanges from
// the broker at url, best effort.
func DeleteNamespace(url, ns string) {
	onChannel(url, func(ch *amqp.Channel) {
		_, _ = ch.QueueDelete("rpc_"+ns+"_request", false, false, false)
		_ = ch.ExchangeDelete("rpc_"+ns+"_request", false, false)
		_ = ch.ExchangeDelete("rpc_"+ns+"_response", false, false)
	})
}

// onChannel runs f on a channel of a connection of its own to url, if
// one opens.
func onChannel(url string, f func(*amqp.Channel)) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		f(ch)
	}
}

// Channel is a plain amqp091-go channel for looking at and forging
// messages, closed when t ends.
func Channel(t testing.TB) *amqp.Channel {
	t.Helper()
	conn, err := amqp.Dial(URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// Replies returns the replies that namespace ns's servers send to
// routing key (a reply_to), as a foreign client would receive them: an
// exclusive queue bound on ns's response exchange, consumed with
// auto-ack on ch, which it returns for publishing requests.
func Replies(t testing.TB, ns, key string) (*amqp.Channel, <-chan amqp.Delivery) {
	t.Helper()
	ch := Channel(t)
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(q.Name, key, "rpc_"+ns+"_response", false, nil))
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	require.NoError(t, err)
	return ch, replies
}

// Buffer is an output (a log, a process's stdout) that tests read while
// others write to it: safe for concurrent use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// QueueDepth is the number of ready messages in queue.
func QueueDepth(t testing.TB, queue string) int {
	t.Helper()
	q, err := Channel(t).QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Messages
}

// Consumers is the number of consumers of queue.
func Consumers(t testing.TB, queue string) int {
	t.Helper()
	q, err := Channel(t).QueueDeclarePassive(queue, true, false, false, false, nil)
	require.NoError(t, err)
	return q.Consumers
}

// Rabbitmqctl runs the broker's control tool, for fault injection and for
// looking at the broker without touching its queues, and returns its output.
//
// AMQPRPC_RABBITMQCTL, if set, is the command (split at spaces, absolute
// paths) that reaches the broker under test, for example
// "/path/scripts/rabbitmq4.sh ctl": the tests must never drive another node
// than the one AMQP_URL points at.
func Rabbitmqctl(t testing.TB, args ...string) string {
	t.Helper()
	cmd := ctlCommand(args...)
	out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
	require.NoError(t, err, "rabbitmqctl %v: %s", args, out)
	return string(out)
}

// SetFrameMax makes the broker offer a frame_max of n bytes to the
// connections opened from now on (RabbitMQ reads it at each handshake).
// When t ends it puts back RabbitMQ's default, 131072, which the tests
// assume (the repo's scripts never change it), rather than the value it
// found: a run killed before its cleanup would leave n there for good.
func SetFrameMax(t testing.TB, n int) {
	t.Helper()
	if was := strings.TrimSpace(Rabbitmqctl(t, "eval", "{ok, N} = application:get_env(rabbit, frame_max), N.")); was != "131072" {
		t.Logf("the broker's frame_max was %s, not RabbitMQ's default; 131072 goes back at the end", was)
	}
	Rabbitmqctl(t, "eval", fmt.Sprintf("application:set_env(rabbit, frame_max, %d).", n))
	t.Cleanup(func() { Rabbitmqctl(t, "eval", "application:set_env(rabbit, frame_max, 131072).") })
}

// Messages is the number of messages in queue, ready and unacked, from
// rabbitmqctl (an AMQP look would not see the unacked ones); -1 if the queue
// is not listed.
func Messages(t testing.TB, queue string) int {
	t.Helper()
	for _, line := range strings.Split(Rabbitmqctl(t, "list_queues", "-q", "name", "messages"), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == queue {
			n, err := strconv.Atoi(f[1])
			require.NoError(t, err)
			return n
		}
	}
	return -1
}

// ShutdownGivesUp calls shutdown (a server's Shutdown, with a handler
// still running) with a context that ends after wait, and checks that it
// gives up with the context's error, soon after.
func ShutdownGivesUp(t testing.TB, shutdown func(context.Context) error, wait time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	start := time.Now()
	require.ErrorIs(t, shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second, "Shutdown returned soon after its context ended")
}

// Serve runs serve (a server's Serve) on its own goroutine until t ends,
// then calls stop (its Close) and checks that both returned nil.
func Serve(t testing.TB, serve func(context.Context) error, stop func() error) {
	t.Helper()
	served := make(chan error, 1)
	go func() { served <- serve(context.Background()) }()
	t.Cleanup(func() {
		require.NoError(t, stop())
		require.NoError(t, <-served)
	})
}
