package amqprpc

import (
	"strconv"
	"strings"
	"sync"
)

// routed is a call's args with the routing key chosen by To.
type routed struct {
	key  string
	args any
}

// To routes one call to the request queues bound with routingKey (see
// Client.CreateRequestQueue) instead of the namespace's main queue:
//
//	client.Go("Messages.ShowMessage", amqprpc.To("alice", msg), &ok, nil)
//
// The server receives args alone. To takes precedence over Tune. It works
// with Call, Go and CallContext.
func To(routingKey string, args any) any { return &routed{key: routingKey, args: args} }

// routes holds the Tune functions of a client.
type routes struct {
	mu sync.RWMutex
	// protects byMethod
	byMethod map[string]func(args any) string
}

// Tune makes route choose the routing key of every call of serviceMethod
// from its args (the args as given to Call, Go or CallContext); "" means
// the main request queue. A call routed with To ignores it. A nil route
// removes the method's function. Tune is safe for concurrent use; route is
// called on the calling goroutine, under the client's send lock, so it must
// be quick and must not call the client.
func (c *Client) Tune(serviceMethod string, route func(args any) string) {
	r := &c.codec.routes
	r.mu.Lock()
	defer r.mu.Unlock()
	if route == nil {
		delete(r.byMethod, serviceMethod)
		return
	}
	if r.byMethod == nil {
		r.byMethod = make(map[string]func(any) string)
	}
	r.byMethod[serviceMethod] = route
}

// route returns the routing key and the args to encode for a call.
func (r *routes) route(serviceMethod string, args any) (key string, inner any) {
	if rt, ok := args.(*routed); ok {
		return rt.key, rt.args
	}
	r.mu.RLock()
	f := r.byMethod[serviceMethod]
	r.mu.RUnlock()
	if f != nil {
		return f(args), args
	}
	return "", args
}

// noRouteError is a call's error when the broker had no queue for its
// routing key, or (fanout set) no queue bound to the fanout exchange at
// all. It matches ErrNoRoute.
type noRouteError struct {
	key    string
	fanout string // the fanout exchange, for a broadcast
}

const noRoutePrefix = "amqprpc: no queue bound for routing key "

func (e *noRouteError) Error() string {
	if e.fanout != "" {
		return "amqprpc: no server listens on fanout exchange " + strconv.Quote(e.fanout)
	}
	return noRoutePrefix + strconv.Quote(e.key)
}
func (e *noRouteError) Is(err error) bool { return err == ErrNoRoute }

// notTakenError is a call's error when no server took its request; its
// text is the server's. It matches ErrNotTaken.
type notTakenError struct{ text string }

func (e *notTakenError) Error() string        { return e.text }
func (e *notTakenError) Is(target error) bool { return target == ErrNotTaken }

// parseNoRoute turns the text of a noRouteError back into one.
func parseNoRoute(text string) (error, bool) {
	q, ok := strings.CutPrefix(text, noRoutePrefix)
	if !ok {
		return nil, false
	}
	key, err := strconv.Unquote(q)
	if err != nil {
		return nil, false
	}
	return &noRouteError{key: key}, true
}
