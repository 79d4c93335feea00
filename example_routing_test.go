package amqprpc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/rpc"
	"sync"
	"time"

	"github.com/amqprpc/amqprpc"
)

// Notice is a message the Core wants a user to see.
type Notice struct{ User, Text string }

// Messages is the "API" servers' service: it keeps the last message shown
// to each user until the user's long poll picks it up.
type Messages struct {
	mu     sync.Mutex
	events map[string]string
}

func (m *Messages) ShowMessage(n Notice, ok *bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events[n.User] = n.Text
	*ok = true
	return nil
}

func (m *Messages) pop(user string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	text, ok := m.events[user]
	delete(m.events, user)
	return text, ok
}

// longPoll is the API server's HTTP handler: it waits up to 10 s for one
// call on the user's own request queue, then answers the message or
// "nothing yet".
func longPoll(server *amqprpc.Server, messages *Messages) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user := r.URL.Query().Get("user")
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		answer := map[string]any{"ok": true, "message": nil}
		if _, err := server.ReceiveFromQueue(ctx, user, 1); err == nil {
			if text, ok := messages.pop(user); ok {
				answer["message"] = text
			}
		} else {
			answer["message"] = "nothing yet"
		}
		_ = json.NewEncoder(w).Encode(answer)
	})
}

// The seed's "different request queues": API servers each observe some
// users through long polling; the Core reaches Alice's API server, without
// knowing which one it is, by sending to Alice's own request queue.
func Example_requestQueues() {
	const ns = "example_messages"

	// An API server.
	messages := &Messages{events: make(map[string]string)}
	services := rpc.NewServer()
	if err := services.Register(messages); err != nil {
		log.Fatal(err)
	}
	api, err := amqprpc.NewServer(brokerURL(), ns, services)
	if err != nil {
		log.Fatal(err)
	}
	defer api.Close()
	web := httptest.NewServer(longPoll(api, messages))
	defer web.Close()

	// The Core creates Alice's queue before sending to it.
	core, err := amqprpc.Dial(brokerURL(), ns)
	if err != nil {
		log.Fatal(err)
	}
	defer core.Close()
	ctx := context.Background()
	if err := core.CreateRequestQueue(ctx, "alice", amqprpc.WithQueueExpiry(time.Hour)); err != nil {
		log.Fatal(err)
	}
	defer core.DeleteRequestQueue(ctx, "alice")

	// Alice's browser polls; meanwhile the Core shows her a message.
	polled := make(chan string)
	go func() {
		resp, err := http.Get(web.URL + "/?user=alice")
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		polled <- string(body)
	}()
	var ok bool
	if err := core.Call("Messages.ShowMessage", amqprpc.To("alice", Notice{"alice", "Hello, Alice!"}), &ok); err != nil {
		log.Fatal(err)
	}
	fmt.Print(<-polled)

	// Tune computes the routing key from the args, here the user field.
	core.Tune("Messages.ShowMessage", func(args any) string { return args.(Notice).User })
	call := core.Go("Messages.ShowMessage", Notice{"alice", "Goodbye, Alice!"}, &ok, nil)
	n, err := api.ReceiveFromQueue(ctx, "alice", 1)
	<-call.Done
	fmt.Println(n, err, call.Error)
	text, _ := messages.pop("alice")
	fmt.Println(text)

	// A routing key without queue fails at once.
	err = core.Call("Messages.ShowMessage", Notice{"bob", "Hi, Bob!"}, &ok)
	fmt.Println(err)
	// Output:
	// {"message":"Hello, Alice!","ok":true}
	// 1 <nil> <nil>
	// Goodbye, Alice!
	// amqprpc: no queue bound for routing key "bob"
}
