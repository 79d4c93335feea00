package amqprpc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// memoryAlarm raises a memory alarm on the broker: with a watermark of 0 it
// blocks every connection that publishes. The returned func, and the end of
// t, put the watermark back as it was.
func memoryAlarm(t *testing.T) (clear func()) {
	t.Helper()
	was := strings.TrimSpace(lastLine(rabbitmqctl(t, "eval", "vm_memory_monitor:get_vm_memory_high_watermark().")))
	restore := []string{"set_vm_memory_high_watermark", was}
	if strings.HasPrefix(was, "{absolute,") { // {absolute,N}
		restore = []string{"set_vm_memory_high_watermark", "absolute", strings.TrimSuffix(strings.TrimPrefix(was, "{absolute,"), "}")}
	}
	rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	var once sync.Once
	clear = func() { once.Do(func() { rabbitmqctl(t, restore...) }) }
	t.Cleanup(clear)
	return clear
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// blockedConnections counts the broker's connections that published during
// an alarm and are paused.
func blockedConnections(t *testing.T) int {
	n := 0
	for _, line := range strings.Split(rabbitmqctl(t, "list_connections", "state"), "\n") {
		if strings.TrimSpace(line) == "blocked" {
			n++
		}
	}
	return n
}

// During a memory alarm the broker stops reading connections that publish.
// Calls made meanwhile are not lost: they complete once it clears, each run
// once.
func TestCallsDuringMemoryAlarm(t *testing.T) {
	ns := testNamespace(t)
	ledger := new(Ledger)
	startServer(t, ns, newRPCServer(t, ledger))
	c := dial(t, ns)
	var reply string
	require.NoError(t, c.Call("Ledger.Record", "before", &reply))

	clear := memoryAlarm(t)
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
	require.Eventually(t, func() bool { return blockedConnections(t) > 0 }, 15*time.Second, 100*time.Millisecond,
		"the alarm blocks the publishing connection")
	time.Sleep(time.Second)
	clear()
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
	ns := testNamespace(t)
	startServer(t, ns, newRPCServer(t, new(Ledger)))
	c, err := Dial(brokerURL(), ns)
	require.NoError(t, err)
	var reply string
	require.NoError(t, c.Call("Ledger.Record", "before", &reply))

	clear := memoryAlarm(t)
	done := make(chan error, 1)
	go func() { done <- c.CallContext(context.Background(), "Ledger.Record", "blocked", new(string)) }()
	require.Eventually(t, func() bool { return blockedConnections(t) > 0 }, 15*time.Second, 100*time.Millisecond)

	start := time.Now()
	require.NoError(t, c.Close())
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	assert.Less(t, time.Since(start), closeBound, "the close handshake waits 5 s at most")
	select {
	case err := <-done:
		assert.ErrorIs(t, err, ErrShutdown)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting call did not end with Close")
	}
	clear() // before the server's Close: it waits for the confirms of its replies
}
