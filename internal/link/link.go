// Package link connects package fanout to the unexported parts of package
// amqprpc without making them public: amqprpc fills these variables in its
// init, and fanout calls them. Nothing else may use it.
package link

import "context"

// Result is one server's answer to a broadcast.
type Result struct {
	Reply any
	Err   error
}

var (
	// Fanout returns an amqprpc.Option (as any) that gives a client or
	// server the fanout topology.
	Fanout func() any
	// CallAll broadcasts a call from client (an *amqprpc.Client) and
	// gathers replies; see fanout.Client.CallAll.
	CallAll func(client any, ctx context.Context, serviceMethod string, args any, newReply func() any, want int) ([]Result, error)
)
