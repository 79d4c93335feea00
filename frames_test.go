package amqprpc

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
	"github.com/amqprpc/amqprpc/transport"
)

// Raw echoes raw payloads.
type Raw struct{}

func (Raw) Echo(p []byte, reply *[]byte) error {
	*reply = p
	return nil
}

// frameMaxes returns the frame_max the broker negotiated with each of the
// connections named name, sorted.
func frameMaxes(t *testing.T, name string) []int {
	t.Helper()
	var sizes []int
	out := brokertest.Rabbitmqctl(t, "list_connections", "-q", "--no-table-headers", "frame_max", "client_properties")
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `"`+name+`"`) {
			continue
		}
		n, err := strconv.Atoi(strings.Fields(line)[0])
		require.NoError(t, err, line)
		sizes = append(sizes, n)
	}
	slices.Sort(sizes)
	return sizes
}

// Payloads of every size around the frame boundaries come back whole. The
// consuming connections offer 64 KiB frames (plus the frame's 8 bytes), so
// that a 64 KiB payload, a few bytes longer once encoded, is read as a full
// frame and a short one; the publishing connections keep amqp091-go's
// 128 KiB, so that it is published as one.
func TestBodiesAcrossFrames(t *testing.T) {
	ns := brokertest.Namespace(t)
	startServer(t, ns, newRPCServer(t, new(Raw)), WithConnectionName("frames server "+ns))
	c := dial(t, ns, WithConnectionName("frames client "+ns))
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
	assert.Equal(t, []int{64<<10 + 8, 128 << 10}, frameMaxes(t, "frames server "+ns))
	assert.Equal(t, []int{64<<10 + 8, 128 << 10}, frameMaxes(t, "frames client "+ns))

	name := "frames shared " + ns
	conn, err := transport.Dial(brokertest.URL(), transport.Config{Name: name})
	require.NoError(t, err)
	defer func() { require.NoError(t, conn.Close()) }()
	assert.Equal(t, []int{64<<10 + 8, 128 << 10}, frameMaxes(t, name))
}
