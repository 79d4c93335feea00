package amqprpc

import (
	"context"
	"encoding/json"
	"fmt"
	"net/rpc"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memoryAlarm raises a memory alarm on the broker: with a watermark of 0 it
// blocks every connection that publishes. The returned func, and the end of
// t, put the watermark back as it was.
func memoryAlarm(t *testing.T) (lift func()) {
	t.Helper()
	restore := watermarkArgs(t, lastLine(brokertest.Rabbitmqctl(t, "eval", "vm_memory_monitor:get_vm_memory_high_watermark().")))
	var once sync.Once
	lift = func() {
		once.Do(func() { brokertest.Rabbitmqctl(t, append([]string{"set_vm_memory_high_watermark"}, restore...)...) })
	}
	t.Cleanup(lift)
	brokertest.Rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	return lift
}

// watermarkArgs turns the watermark the broker reports (0.4, {relative,0.4},
// {absolute,1073741824}, {absolute,"1024M"}) into set_vm_memory_high_watermark
// arguments. A watermark of 0, left by a run that was killed during an
// alarm, becomes RabbitMQ's default, 0.4.
func watermarkArgs(t *testing.T, was string) []string {
	was = strings.TrimSpace(was)
	if v, ok := strings.CutPrefix(was, "{absolute,"); ok {
		return []string{"absolute", strings.Trim(strings.TrimSuffix(v, "}"), `"`)}
	}
	if v, ok := strings.CutPrefix(was, "{relative,"); ok {
		was = strings.TrimSuffix(v, "}")
	}
	if f, err := strconv.ParseFloat(was, 64); err != nil || f <= 0 {
		t.Logf("memory watermark was %q: restoring the default, 0.4", was)
		return []string{"0.4"}
	}
	return []string{was}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// blockedConnections counts the broker's connections whose name contains
// name and that are blocked: they published during an alarm and are paused.
func blockedConnections(t *testing.T, name string) int {
	out := brokertest.Rabbitmqctl(t, "list_connections", "client_properties", "state", "-q", "--formatter", "json")
	var conns []struct {
		ClientProperties [][]json.RawMessage `json:"client_properties"`
		State            string              `json:"state"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &conns), "%s", out)
	n := 0
	for _, c := range conns {
		for _, p := range c.ClientProperties {
			var key, value string
			if len(p) == 3 && json.Unmarshal(p[0], &key) == nil && key == "connection_name" &&
				json.Unmarshal(p[2], &value) == nil && strings.Contains(value, name) && c.State == "blocked" {
				n++
			}
		}
	}
	return n
}

// During a memory alarm the broker stops reading connections that publish.
// Calls made meanwhile wait, and are not lost: they complete once it clears,
// each run once.
func TestCallsDuringMemoryAlarm(t *testing.T) {
	ns := brokertest.Namespace(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger))
	c := dial(t, ns, WithConnectionName("alarm test client "+ns))
	var reply string
	require.NoError(t, c.Call("Ledger.Record", "before", &reply))

	lift := memoryAlarm(t)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			var reply string
			id := fmt.Sprint("during ", i)
			err := c.CallContext(ctx, "Ledger.Record", id, &reply)
			if err == nil && reply != id {
				err = fmt.Errorf("reply %q to %q", reply, id)
			}
			errs <- err
		}()
	}
	require.Eventually(t, func() bool { return blockedConnections(t, ns) > 0 }, 15*time.Second, 100*time.Millisecond,
		"the alarm blocks a publishing connection of the test's")
	time.Sleep(time.Second)
	assert.Zero(t, len(errs), "no call completes while the broker blocks the client")
	lift()
	for range n {
		require.NoError(t, <-errs)
	}
	want := map[string]int{"before": 1}
	for i := range n {
		want[fmt.Sprint("during ", i)] = 1
	}
	assert.Equal(t, want, ledger.counts())
}

// closeBound is how long a Close may take while the broker is not reading:
// the 5 s close timeout and slack for a loaded machine.
const closeBound = 8 * time.Second

// Close returns in bounded time while the broker blocks the client's
// publishing connection (it stops reading it, close handshake included),
// and fails the call that was waiting.
func TestCloseDuringMemoryAlarm(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Ledger)))
	c, err := Dial(brokertest.URL(), ns, WithConnectionName("alarm test client "+ns))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() }) // Close is idempotent
	var reply string
	require.NoError(t, c.Call("Ledger.Record", "before", &reply))

	lift := memoryAlarm(t)
	done := make(chan error, 1)
	go func() { done <- c.CallContext(context.Background(), "Ledger.Record", "blocked", new(string)) }()
	require.Eventually(t, func() bool { return blockedConnections(t, "alarm test client "+ns) > 0 }, 15*time.Second, 100*time.Millisecond,
		"the alarm blocks the client's publishing connection")

	start := time.Now()
	require.NoError(t, c.Close())
	took := time.Since(start)
	t.Logf("Close took %v", took.Round(time.Millisecond))
	assert.Less(t, took, closeBound, "the close handshake waits 5 s at most")
	assert.Greater(t, took, 4*time.Second, "the broker does not answer a blocked connection's close: the cut ended it")
	select {
	case err := <-done:
		assert.ErrorIs(t, err, rpc.ErrShutdown)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting call did not end with Close")
	}
	lift() // before the server's Close: it waits for the confirms of its replies
}

func TestWatermarkArgs(t *testing.T) {
	for was, want := range map[string][]string{
		"0.4":                   {"0.4"},
		"{relative,0.6}":        {"0.6"},
		"{absolute,1073741824}": {"absolute", "1073741824"},
		`{absolute,"1024M"}`:    {"absolute", "1024M"},
		"0.0":                   {"0.4"},
		"0":                     {"0.4"},
		"{badrpc,nodedown}":     {"0.4"},
	} {
		assert.Equal(t, want, watermarkArgs(t, was), was)
	}
}
