package amqprpc

import (
	"context"
	"errors"
	"fmt"
	"net/rpc"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Message and Inbox are the seed's "show a message to a user" service.
type Message struct{ User, Text string }

type Inbox struct {
	mu  sync.Mutex
	got map[string][]string
}

func (in *Inbox) ShowMessage(m Message, ok *bool) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.got == nil {
		in.got = make(map[string][]string)
	}
	in.got[m.User] = append(in.got[m.User], m.Text)
	*ok = true
	return nil
}

func (in *Inbox) messages(user string) []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]string(nil), in.got[user]...)
}

func queueExists(t testing.TB, queue string) bool {
	t.Helper()
	_, err := brokertest.Channel(t).QueueDeclarePassive(queue, true, false, false, false, nil)
	return err == nil
}

// inboxService serves a new Inbox in a namespace of t's own and returns it
// with its server and a client.
func inboxService(t *testing.T) (ns string, inbox *Inbox, s *Server, c *Client) {
	t.Helper()
	ns = brokertest.Namespace(t)
	inbox = new(Inbox)
	s = startServer(t, ns, newRPCServer(t, inbox))
	return ns, inbox, s, dial(t, ns)
}

// userQueue creates user's request queue through c, deletes it when t ends,
// and returns its broker name.
func userQueue(t *testing.T, c *Client, ns, user string) string {
	t.Helper()
	require.NoError(t, c.CreateRequestQueue(context.Background(), user))
	t.Cleanup(func() { _ = c.DeleteRequestQueue(context.Background(), user) })
	return "rpc_" + ns + "_queue_" + user
}

func TestCreateAndDeleteRequestQueue(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	ctx := context.Background()
	require.NoError(t, c.CreateRequestQueue(ctx, "alice"))
	require.NoError(t, c.CreateRequestQueue(ctx, "alice"), "creating it again is fine")
	queue := "rpc_" + ns + "_queue_alice"
	t.Cleanup(func() { _, _ = brokertest.Channel(t).QueueDelete(queue, false, false, false) })

	// Durable, no arguments, bound with key "alice".
	_, err := brokertest.Channel(t).QueueDeclare(queue, true, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, brokertest.Channel(t).Publish("rpc_"+ns+"_request", "alice", true, false, amqp.Publishing{Body: []byte("x")}))
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, queue) == 1 }, 5*time.Second, 10*time.Millisecond)

	require.NoError(t, c.DeleteRequestQueue(ctx, "alice"))
	assert.False(t, queueExists(t, queue))
	require.NoError(t, c.DeleteRequestQueue(ctx, "alice"), "deleting a missing queue is fine")

	assert.Error(t, c.CreateRequestQueue(ctx, ""))
}

func TestRequestQueueExpiry(t *testing.T) {
	ns := brokertest.Namespace(t)
	c := dial(t, ns)
	require.NoError(t, c.CreateRequestQueue(context.Background(), "gone", WithQueueExpiry(2*time.Second)))
	// Looking at the queue through AMQP would count as using it: ask
	// rabbitmqctl instead.
	listed := func() bool {
		return strings.Contains(brokertest.Rabbitmqctl(t, "list_queues", "-q", "name"), "rpc_"+ns+"_queue_gone")
	}
	require.True(t, listed())
	require.Eventually(t, func() bool { return !listed() }, 10*time.Second, 100*time.Millisecond,
		"the broker deletes the unused queue")
}

// The seed's story: the Core creates Alice's queue and sends to it; an API
// server that started waiting before the queue existed handles the call.
func TestReceiveBeforeQueueExists(t *testing.T) {
	_, inbox, s, c := inboxService(t)
	t.Cleanup(func() { _ = c.DeleteRequestQueue(context.Background(), "alice") }) // created below

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	received := make(chan result, 1)
	go func() { n, err := s.ReceiveFromQueue(ctx, "alice", 1); received <- result{n, err} }()

	require.NoError(t, c.CreateRequestQueue(ctx, "alice"))
	var ok bool
	require.NoError(t, c.CallContext(ctx, "Inbox.ShowMessage", To("alice", Message{"alice", "Hello, Alice!"}), &ok))
	assert.True(t, ok)
	r := <-received
	require.NoError(t, r.err)
	assert.Equal(t, 1, r.n)
	assert.Equal(t, []string{"Hello, Alice!"}, inbox.messages("alice"))
}

func TestReceiveTimesOutOnIdleQueue(t *testing.T) {
	ns, _, s, c := inboxService(t)
	queue := userQueue(t, c, ns, "idle")

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n, err := s.ReceiveFromQueue(ctx, "idle", 1)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, 0, n)
	require.Eventually(t, func() bool { return brokertest.Consumers(t, queue) == 0 }, 5*time.Second, 10*time.Millisecond,
		"the receive stopped consuming")
}

// max = 2 with 3 queued calls: the third stays for the next receive.
func TestReceiveTakesNoMoreThanMax(t *testing.T) {
	ns, inbox, s, c := inboxService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	queue := userQueue(t, c, ns, "bob")

	calls := make([]*rpc.Call, 3)
	for i := range calls {
		calls[i] = c.Go("Inbox.ShowMessage", To("bob", Message{"bob", fmt.Sprint("m", i)}), new(bool), nil)
	}
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, queue) == 3 }, 5*time.Second, 10*time.Millisecond)

	n, err := s.ReceiveFromQueue(ctx, "bob", 2)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Len(t, inbox.messages("bob"), 2)
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, queue) == 1 }, 5*time.Second, 10*time.Millisecond,
		"the third call is back in the queue")

	n, err = s.ReceiveFromQueue(ctx, "bob", 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, 0, brokertest.QueueDepth(t, queue))
	for _, call := range calls {
		<-call.Done
		require.NoError(t, call.Error)
	}
	assert.ElementsMatch(t, []string{"m0", "m1", "m2"}, inbox.messages("bob"))
}

// Tune routes by an argument field; two receives run at once with Serve.
func TestTuneRoutesByArgument(t *testing.T) {
	ns := brokertest.Namespace(t)
	inbox := new(Inbox)
	s := startServer(t, ns, newRPCServer(t, inbox, new(Math)))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range []string{"alice", "bob"} {
		userQueue(t, c, ns, u)
	}
	c.Tune("Inbox.ShowMessage", func(args any) string { return args.(Message).User })

	var wg sync.WaitGroup
	counts := make(map[string]int)
	var mu sync.Mutex
	for _, u := range []string{"alice", "bob"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := s.ReceiveFromQueue(ctx, u, 1)
			assert.NoError(t, err)
			mu.Lock()
			counts[u] = n
			mu.Unlock()
		}()
	}
	var ok bool
	require.NoError(t, c.CallContext(ctx, "Inbox.ShowMessage", Message{"bob", "Goodbye, Bob!"}, &ok))
	require.NoError(t, c.Call("Inbox.ShowMessage", Message{"alice", "Goodbye, Alice!"}, &ok))
	var sum int
	require.NoError(t, c.Call("Math.SumNumbers", []int{1, 1}, &sum), "untuned methods use the main queue")
	wg.Wait()
	assert.Equal(t, map[string]int{"alice": 1, "bob": 1}, counts)
	assert.Equal(t, []string{"Goodbye, Alice!"}, inbox.messages("alice"))
	assert.Equal(t, []string{"Goodbye, Bob!"}, inbox.messages("bob"))

	// To wins over Tune.
	call := c.Go("Inbox.ShowMessage", To("", Message{"carol", "main queue"}), &ok, nil)
	<-call.Done
	require.NoError(t, call.Error)
	assert.Equal(t, []string{"main queue"}, inbox.messages("carol"))
}

func TestUnroutableCallFailsAtOnce(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Inbox)))
	c := dial(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ok bool
	err := c.CallContext(ctx, "Inbox.ShowMessage", To("nobody", Message{"nobody", "?"}), &ok)
	require.ErrorIs(t, err, ErrNoRoute)
	assert.False(t, errors.Is(err, context.DeadlineExceeded))
	assert.Contains(t, err.Error(), `"nobody"`)

	call := c.Go("Inbox.ShowMessage", To("nobody", Message{"nobody", "?"}), &ok, nil)
	<-call.Done
	require.ErrorIs(t, call.Error, ErrNoRoute, "a Go call gets the error value too")
	assert.Equal(t, `amqprpc: no queue bound for routing key "nobody"`, call.Error.Error())
	require.NoError(t, c.Call("Inbox.ShowMessage", Message{"x", "y"}, &ok), "the client keeps working")
}

// Malformed requests in a user queue are refused and not counted.
func TestReceiveCountsOnlyWellFormedCalls(t *testing.T) {
	ns, inbox, s, c := inboxService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	queue := userQueue(t, c, ns, "dan")

	ch := brokertest.Channel(t)
	for _, m := range []amqp.Publishing{
		{Type: "Inbox.ShowMessage", ReplyTo: "x", CorrelationId: "1", ContentType: "application/msgpack", Body: []byte{0xc1}},
		{Type: "Inbox.Nope", ReplyTo: "x", CorrelationId: "2", ContentType: "application/json", Body: []byte("1")},
		{Type: "Inbox.ShowMessage", ContentType: "application/json", Body: []byte(`{}`)}, // no reply_to
	} {
		require.NoError(t, ch.Publish("rpc_"+ns+"_request", "dan", false, false, m))
	}
	// They are queued before the good call (another connection's publish
	// could overtake them).
	require.Eventually(t, func() bool { return brokertest.QueueDepth(t, queue) == 3 }, 5*time.Second, 10*time.Millisecond)
	var ok bool
	call := c.Go("Inbox.ShowMessage", To("dan", Message{"dan", "real"}), &ok, nil)
	n, err := s.ReceiveFromQueue(ctx, "dan", 1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	<-call.Done
	require.NoError(t, call.Error)
	assert.Equal(t, []string{"real"}, inbox.messages("dan"))
	assert.Equal(t, 0, brokertest.QueueDepth(t, queue))
}

// TestReceiveSurvives checks that a receive waiting on its queue takes its
// call after a disruption: the broker closing every connection, or the
// queue being deleted and created again.
func TestReceiveSurvives(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disrupt func(t *testing.T, c *Client, user string)
	}{
		{"connection loss", func(t *testing.T, c *Client, user string) {
			brokertest.Rabbitmqctl(t, "close_all_connections", "fault test")
		}},
		{"queue deletion", func(t *testing.T, c *Client, user string) {
			require.NoError(t, c.DeleteRequestQueue(context.Background(), user))
			require.NoError(t, c.CreateRequestQueue(context.Background(), user))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, inbox, s, c := inboxService(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			queue := userQueue(t, c, ns, "erin")

			received := make(chan int, 1)
			go func() {
				n, err := s.ReceiveFromQueue(ctx, "erin", 1)
				assert.NoError(t, err)
				received <- n
			}()
			require.Eventually(t, func() bool { return brokertest.Consumers(t, queue) == 1 }, 10*time.Second, 10*time.Millisecond)
			tc.disrupt(t, c, "erin")
			require.Eventually(t, func() bool { return brokertest.Consumers(t, queue) == 1 }, 30*time.Second, 20*time.Millisecond,
				"the receive consumes again")

			var ok bool
			require.NoError(t, c.CallContext(ctx, "Inbox.ShowMessage", To("erin", Message{"erin", "after"}), &ok))
			assert.Equal(t, 1, <-received)
			assert.Equal(t, []string{"after"}, inbox.messages("erin"))
		})
	}
}
