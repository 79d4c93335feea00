package fanout_test

import (
	"context"
	"fmt"
	"log"
	"net/rpc"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/fanout"
)

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// Cache is one node's cache; Invalidate drops the keys with a prefix and
// says how many it dropped.
type Cache struct {
	mu   sync.Mutex
	keys map[string]string
}

func (c *Cache) Invalidate(prefix string, dropped *int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.keys {
		if strings.HasPrefix(k, prefix) {
			delete(c.keys, k)
			*dropped++
		}
	}
	return nil
}

// Broadcasting: every node runs the invalidation once, and CallAll
// gathers each node's count.
func ExampleClient_CallAll() {
	const ns = "example_cache"
	for i, keys := range [][]string{{"user:1", "user:2", "page:1"}, {"user:3"}, {"page:2"}} {
		cache := &Cache{keys: map[string]string{}}
		for _, k := range keys {
			cache.keys[k] = "…"
		}
		services := rpc.NewServer()
		if err := services.Register(cache); err != nil {
			log.Fatal(err)
		}
		node, err := fanout.NewServer(brokerURL(), ns, services, amqprpc.WithConnectionName(fmt.Sprint("node ", i)))
		if err != nil {
			log.Fatal(err)
		}
		defer node.Close()
		go node.Serve(context.Background())
	}

	client, err := fanout.Dial(brokerURL(), ns)
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	results, err := client.CallAll(ctx, "Cache.Invalidate", "user:", func() any { return new(int) }, 3)
	if err != nil {
		log.Fatal(err)
	}
	var counts []int
	for _, r := range results {
		if r.Err != nil {
			log.Fatal(r.Err)
		}
		counts = append(counts, *r.Reply.(*int))
	}
	sort.Ints(counts)
	fmt.Println(len(results), "nodes dropped", counts)
	// Output:
	// 3 nodes dropped [0 1 2]
}
