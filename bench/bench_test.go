package bench

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// BenchmarkEcho runs every contender at each concurrency and body size;
// b.N calls are shared among the callers. Besides ns/op (wall time per call
// at that concurrency) it reports calls/s and the p50/p99 latency.
func BenchmarkEcho(b *testing.B) {
	for _, f := range Contenders() {
		c, err := f.Start(brokertest.URL())
		if err != nil {
			b.Skip("no broker: ", err)
		}
		for _, conc := range []int{1, 16, 64, 256} {
			for _, size := range []int{16, 1024, 64 << 10} {
				b.Run(fmt.Sprintf("%s/c=%d/body=%d", f.Short, conc, size), func(b *testing.B) {
					benchmark(b, c, conc, size)
				})
			}
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchmark(b *testing.B, c Contender, concurrency, size int) {
	body := bytes.Repeat([]byte{'x'}, size)
	b.ReportAllocs()
	b.SetParallelism(max(1, concurrency/max(1, runtimeProcs())))
	lat := make(chan time.Duration, 1<<16)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			t0 := time.Now()
			reply, err := c.Call(context.Background(), body)
			if err != nil || len(reply) != size {
				b.Errorf("call: %v (%d bytes back)", err, len(reply))
				return
			}
			select {
			case lat <- time.Since(t0):
			default:
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	close(lat)
	var all []time.Duration
	for l := range lat {
		all = append(all, l)
	}
	if len(all) > 0 {
		sortDurations(all)
		b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	}
}
