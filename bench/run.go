package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

// Result is one contender's measurement at one concurrency and body size.
type Result struct {
	Contender   string
	Concurrency int
	BodySize    int
	Calls       int
	Duration    time.Duration
	P50, P99    time.Duration
	CPUPerCall  time.Duration // user+sys time of this process per call
	// BrokerCPUPerCall is the broker's user+sys time per call, when the
	// broker runs on this machine (see BrokerPID); -1 otherwise.
	BrokerCPUPerCall time.Duration
	AllocsPerCall    float64 // heap allocations of this process per call
}

// CallsPerSecond is the throughput.
func (r Result) CallsPerSecond() float64 { return float64(r.Calls) / r.Duration.Seconds() }

// Run makes concurrency callers call c with bodies of bodySize bytes, first
// for warmup (not measured), then for d, and measures. Any failed or wrong
// call is an error: a benchmark that loses calls measures nothing.
func Run(c Contender, name string, concurrency, bodySize int, warmup, d time.Duration) (Result, error) {
	body := bytes.Repeat([]byte{'x'}, bodySize)
	if _, _, err := drive(c, body, concurrency, warmup); err != nil {
		return Result{}, err
	}
	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	pid := BrokerPID(BrokerURL)
	cpu0, bcpu0 := cpuTime(), ProcessCPU(pid)
	start := time.Now()
	lat, calls, err := drive(c, body, concurrency, d)
	elapsed := time.Since(start)
	cpu, bcpu1 := cpuTime()-cpu0, ProcessCPU(pid)
	runtime.ReadMemStats(&ms1)
	if err != nil {
		return Result{}, err
	}
	slices.Sort(lat)
	bcpu := time.Duration(-1)
	if pid > 0 && bcpu0 >= 0 && bcpu1 >= 0 {
		bcpu = (bcpu1 - bcpu0) / time.Duration(calls)
	}
	return Result{
		Contender:        name,
		Concurrency:      concurrency,
		BodySize:         bodySize,
		Calls:            calls,
		Duration:         elapsed,
		P50:              lat[len(lat)/2],
		P99:              lat[len(lat)*99/100],
		CPUPerCall:       cpu / time.Duration(calls),
		BrokerCPUPerCall: bcpu,
		AllocsPerCall:    float64(ms1.Mallocs-ms0.Mallocs) / float64(calls),
	}, nil
}

// drive runs the callers for d and returns every call's latency.
func drive(c Contender, body []byte, concurrency int, d time.Duration) ([]time.Duration, int, error) {
	deadline := time.Now().Add(d)
	lats := make([][]time.Duration, concurrency)
	errs := make([]error, concurrency)
	var wg sync.WaitGroup
	for i := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				t0 := time.Now()
				reply, err := c.Call(ctx, body)
				lat = append(lat, time.Since(t0))
				cancel()
				if err == nil && !bytes.Equal(reply, body) {
					err = fmt.Errorf("echo of %d bytes came back as %d bytes", len(body), len(reply))
				}
				if err != nil {
					errs[i] = err
					break
				}
			}
			lats[i] = lat
		}()
	}
	wg.Wait()
	var all []time.Duration
	for i, l := range lats {
		if errs[i] != nil {
			return nil, 0, errs[i]
		}
		all = append(all, l...)
	}
	return all, len(all), nil
}

// BrokerURL is the broker whose CPU Run reads (see BrokerPID): AMQP_URL,
// or the local default. The command sets it from its -url flag.
var BrokerURL = func() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}()

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }

func sortDurations(d []time.Duration) { slices.Sort(d) }
