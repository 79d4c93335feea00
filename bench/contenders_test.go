package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// Every contender of the comparison, the floor without each of amqprpc's
// broker features (-without) and the floor with direct reply-to, echoes
// bodies of the sizes the table uses, is measured by Run, and deletes what
// it declared on Close.
func TestContenders(t *testing.T) {
	brokertest.Need(t)
	factories := Contenders()
	for f := Feature(1); f < AllFeatures; f <<= 1 {
		factories = append(factories, FloorWithout(f))
	}
	factories = append(factories, FloorDirectReplyTo)
	for _, f := range factories {
		t.Run(f.Short, func(t *testing.T) {
			c, err := f.Start(brokertest.URL())
			require.NoError(t, err)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, size := range []int{0, 16, 1024, 64 << 10} {
				body := make([]byte, size)
				for i := range body {
					body[i] = byte(i * 7)
				}
				got, err := c.Call(ctx, body)
				require.NoError(t, err, "%d bytes", size)
				require.True(t, bytes.Equal(body, got), "%d bytes came back as %d", size, len(got)) // nil and empty alike
			}

			r, err := Run(c, f.Name, 4, 16, 20*time.Millisecond, 200*time.Millisecond)
			require.NoError(t, err)
			assert.Positive(t, r.Calls)
			assert.Positive(t, r.CallsPerSecond())
			assert.Positive(t, r.P50)
			assert.GreaterOrEqual(t, r.P99, r.P50)
			assert.Positive(t, r.CPUPerCall)
			assert.Positive(t, r.AllocsPerCall)
			if BrokerPID(BrokerURL) > 0 {
				assert.GreaterOrEqual(t, r.BrokerCPUPerCall, time.Duration(0))
			} else {
				assert.Equal(t, time.Duration(-1), r.BrokerCPUPerCall)
			}

			require.NoError(t, c.Close())
			for _, q := range declaredQueues(c) {
				assert.False(t, queueExists(t, q), "%s is left behind", q)
			}
		})
	}
}

// declaredQueues are the durable or shared queues c declared, which its
// Close must delete; exclusive queues go with their connection, and
// amqprpc's reply queue expires on its own.
func declaredQueues(c Contender) []string {
	switch c := c.(type) {
	case *amqprpcContender:
		return []string{"rpc_" + c.ns + "_request"}
	case *floor:
		if c.has&DurableQueues != 0 {
			return []string{c.queue, c.queue + "_reply"}
		}
	}
	return nil
}

func queueExists(t *testing.T, queue string) bool {
	_, err := brokertest.Channel(t).QueueDeclarePassive(queue, false, false, false, false, nil)
	return err == nil
}
