package amqprpc

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// Raw echoes raw payloads.
type Raw struct{}

func (Raw) Echo(p []byte, reply *[]byte) error {
	*reply = p
	return nil
}

// Payloads of every size around amqp091-go's boundaries come back whole:
// its 64 KiB read chunks (a 64 KiB payload is a few bytes longer once
// encoded) and the 128 KiB frames, past which a body spans several.
func TestBodiesAcrossFrames(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Raw)))
	c := dial(t, ns)
	sizes := []int{0, 1, 4096, 131063, 131064, 131065, 262144, 1 << 20}
	for n := 65520; n <= 65550; n++ {
		sizes = append(sizes, n)
	}
	for _, n := range sizes {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rand.Uint32())
		}
		var got []byte
		require.NoError(t, c.Call("Raw.Echo", p, &got), "%d bytes", n)
		require.True(t, bytes.Equal(p, got), "%d bytes: the reply differs", n)
	}
}
