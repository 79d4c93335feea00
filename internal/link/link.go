// Package link connects packages fanout and transport to the unexported
// parts of package amqprpc and of each other without making them public:
// the package that owns each variable fills it in its init, and the others
// call it. Nothing else may use it.
package link

import (
	"context"

	"github.com/amqprpc/amqprpc/internal/transport"
)

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
	CallAll func(ctx context.Context, client any, serviceMethod string, args any, newReply func() any, want int) ([]Result, error)
	// Conns returns the publishing and consuming connections of a
	// *transport.Conn (package transport, the public one), which fills it
	// in its init.
	Conns func(conn any) (pub, sub *transport.Conn)
)
