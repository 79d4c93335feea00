package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/amqprpc/amqprpc"
)

func newPingCmd(g *globals) *cobra.Command {
	var (
		n, c, size int
		timeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "ping [flags] NAMESPACE",
		Short: "Time round trips to the servers of a namespace",
		Long: `ping calls amqprpc.Ping, which every amqprpc server answers by echoing its
args without running a handler (PROTOCOL.md, "The reserved service"), -n
times from -c concurrent callers, and prints the round-trip latency
percentiles and the calls per second. It tells in seconds whether the path
client → broker → some server → client works, and how fast. A progress bar
shows long runs on a terminal. Ctrl-C stops it and prints what was measured.

` + exitCodesHelp,
		Example: `  amqprpc ping math
  amqprpc ping math -n 10000 -c 16 --size 1024`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if n < 1 || c < 1 || size < 0 {
				return exit(exitUsage, fmt.Errorf("-n %d -c %d --size %d: n and c at least 1, size at least 0", n, c, size))
			}
			client, err := amqprpc.Dial(g.url, args[0], amqprpc.WithCallTimeout(timeout), cliReplyQueue)
			if err != nil {
				return dialError(g.url, err)
			}
			defer client.Close()
			fmt.Fprintf(g.stdout, "PING %s via %s: %d calls, %d callers, %d bytes each\n", args[0], redact(g.url), n, c, size)
			res := pingRun(cmd.Context(), client, n, c, size, timeout, progress(g.stderr, n))
			res.print(g.stdout)
			switch {
			case cmd.Context().Err() != nil:
				return exit(exitInterrupted, nil)
			case res.firstErr != nil:
				return callError(cmd.Context(), res.firstErr)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVarP(&n, "count", "n", 10, "calls to make")
	f.IntVarP(&c, "concurrency", "c", 1, "concurrent callers")
	f.IntVar(&size, "size", 16, "bytes of args per call")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "deadline of each call")
	return cmd
}

// progress returns a progress bar on w for n calls, when w is a terminal
// and the run is long enough to need one; nil otherwise.
func progress(w io.Writer, n int) *progressbar.ProgressBar {
	if n < 1000 || !terminal(w) {
		return nil
	}
	return progressbar.NewOptions(n, progressbar.OptionSetWriter(w), progressbar.OptionShowCount(),
		progressbar.OptionShowIts(), progressbar.OptionSetItsString("calls"), progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond))
}

// pingResult is what a ping run measured.
type pingResult struct {
	latencies []time.Duration // of the calls answered
	failed    int
	firstErr  error
	elapsed   time.Duration
}

// pingRun makes n calls of PingMethod from c goroutines, until they are
// made or ctx ends.
func pingRun(ctx context.Context, client *amqprpc.Client, n, c, size int, timeout time.Duration, bar *progressbar.ProgressBar) *pingResult {
	payload := bytes.Repeat([]byte{'x'}, size)
	var next atomic.Int64
	var mu sync.Mutex
	res := &pingResult{latencies: make([]time.Duration, 0, n)}
	var wg sync.WaitGroup
	start := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, timeout)
				t0 := time.Now()
				var echo []byte
				err := client.CallContext(cctx, amqprpc.PingMethod, payload, &echo)
				d := time.Since(t0)
				cancel()
				if err == nil && !bytes.Equal(echo, payload) {
					err = fmt.Errorf("the echo differs from what was sent (%d bytes, not %d)", len(echo), len(payload))
				}
				mu.Lock()
				if err != nil {
					res.failed++
					if res.firstErr == nil && ctx.Err() == nil {
						res.firstErr = err
					}
				} else {
					res.latencies = append(res.latencies, d)
				}
				mu.Unlock()
				if bar != nil {
					_ = bar.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if bar != nil {
		_ = bar.Finish()
	}
	return res
}

func (r *pingResult) print(w io.Writer) {
	ok := len(r.latencies)
	rate := float64(ok) / r.elapsed.Seconds()
	fmt.Fprintf(w, "%d answered, %d failed in %.2f s: %.0f calls/s\n", ok, r.failed, r.elapsed.Seconds(), rate)
	if r.firstErr != nil {
		fmt.Fprintf(w, "first failure: %v\n", r.firstErr)
	}
	if ok == 0 {
		return
	}
	slices.Sort(r.latencies)
	pct := func(p float64) string {
		i := int(p*float64(ok)+0.5) - 1
		return ms(r.latencies[max(0, min(i, ok-1))])
	}
	fmt.Fprintf(w, "round trip: min %s  p50 %s  p90 %s  p99 %s  max %s\n",
		ms(r.latencies[0]), pct(0.50), pct(0.90), pct(0.99), ms(r.latencies[ok-1]))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
