package amqprpc

import (
	"bufio"
	"context"
	"fmt"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// restartBroker stops and starts the RabbitMQ application, as an operator's
// restart would: every connection drops, transient messages are lost, durable
// queues and persistent messages stay.
func restartBroker(t *testing.T) {
	t.Helper()
	brokertest.Rabbitmqctl(t, "stop_app")
	brokertest.Rabbitmqctl(t, "start_app")
	brokertest.Rabbitmqctl(t, "await_startup")
}

// After a broker restart the same client and server work again.
func TestBrokerRestart(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Math)))
	c := dial(t, ns)
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 2}, &sum))

	restartBroker(t)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(t, c.CallContext(ctx, "Math.SumNumbers", []int{2, 3}, &sum))
	assert.Equal(t, 5, sum)
}

// With WithPersistent, a call waiting in the broker survives its restart.
func TestPersistentCallSurvivesBrokerRestart(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns, WithPersistent())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var sum int
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Math.SumNumbers", []int{20, 22}, &sum) }()
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, "rpc_"+ns+"_request") == 1 }, 10*time.Second, 10*time.Millisecond)

	restartBroker(t)
	require.Equal(t, 1, brokertest.QueueDepth(t, "rpc_"+ns+"_request"), "the persistent request is still queued")

	startServer(t, ns, newRPCServer(t, new(Math)))
	require.NoError(t, <-done)
	assert.Equal(t, 42, sum)
}

// childServerEnv makes the test binary a server process for
// TestServerKilledMidCall instead of running tests.
const childServerEnv = "AMQPRPC_TEST_CHILD_SERVER"

// Stall is the child server's service: it says on stdout that a call
// arrived, then never returns.
type Stall struct{}

func (Stall) Forever(arg string, reply *string) error {
	fmt.Println("entered", arg)
	select {}
}

// runChildServer serves Stall in namespace ns until killed.
func runChildServer(ns string) {
	rcvr := rpc.NewServer()
	if err := rcvr.RegisterName("Stall", Stall{}); err != nil {
		panic(err)
	}
	s, err := NewServer(brokertest.URL(), ns, rcvr)
	if err != nil {
		panic(err)
	}
	fmt.Println("serving")
	_ = s.Serve(context.Background())
}

// Finisher completes what the killed server could not.
type Finisher struct{}

func (Finisher) Forever(arg string, reply *string) error {
	*reply = "finished " + arg
	return nil
}

// A server process killed with SIGKILL in the middle of a call: the broker
// gives the call to another server and the caller gets its reply.
func TestServerKilledMidCall(t *testing.T) {
	ns := brokertest.Namespace(t)
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childServerEnv+"="+ns)
	out, err := child.StdoutPipe()
	require.NoError(t, err)
	child.Stderr = os.Stderr
	require.NoError(t, child.Start())
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	lines := bufio.NewScanner(out)
	require.True(t, lines.Scan())
	require.Equal(t, "serving", lines.Text())

	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var reply string
	done := make(chan error, 1)
	go func() { done <- c.CallContext(ctx, "Stall.Forever", "x", &reply) }()
	require.True(t, lines.Scan())
	require.Equal(t, "entered x", strings.TrimSpace(lines.Text()))

	require.NoError(t, child.Process.Kill()) // SIGKILL
	_ = child.Wait()
	rcvr := rpc.NewServer()
	require.NoError(t, rcvr.RegisterName("Stall", Finisher{}))
	startServer(t, ns, rcvr)
	require.NoError(t, <-done)
	assert.Equal(t, "finished x", reply)
}
