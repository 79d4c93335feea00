//go:build cluster

package amqprpc

// The cluster tests run on the local 3-node RabbitMQ cluster that
// scripts/cluster.sh starts: make test-cluster, which CI runs. They stop
// one node at a time, for 20 s, under 16 callers: the node holding the
// request queue (a quorum queue's leader, a classic queue's home), then
// the server's node, then the client's, and report for each what the
// callers saw: calls answered and failed, handlers run twice, and the
// longest time without a successful call. The same figures are in the
// README's "Running on a cluster".

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqprpc/amqprpc/internal/brokertest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/link"
)

const (
	clusterCallers  = 16
	clusterOutage   = 20 * time.Second // how long each node stays down
	clusterDeadline = 30 * time.Second // of each call
)

// A quorum request queue, and every node's URL on both sides: no call may
// fail, whichever node stops; not even the probe, made during the outage
// with the callers' deadline. (Its deadline was 5 s; but when the queue's
// leader is on the stopped node the broker nacks requests until a new one
// is elected, which took 18.3 and 21.2 s in two of four CI runs on
// 2026-11-30: the calls are held meanwhile, and a 5 s call cannot
// succeed.)
func TestClusterQuorumSeveralURLs(t *testing.T) {
	r := runClusterStops(t, QuorumQueue, false, "queue", "server", "client")
	for _, s := range r {
		assert.Zero(t, s.failed, "stage %s: calls failed: %v", s.name, s.errs)
		assert.NoError(t, s.probe, "stage %s: the probe", s.name)
	}
}

// A classic request queue lives on one node: while it is down its calls
// wait, and those whose deadline comes first fail with
// ErrQueueUnavailable, never ErrNoRoute (checked by runClusterStops; the
// probe, a call with a 5 s deadline made while the node is down, shows
// it). The other stops cost nothing.
func TestClusterClassicSeveralURLs(t *testing.T) {
	r := runClusterStops(t, ClassicQueue, false, "queue", "server", "client")
	require.ErrorIs(t, r[0].probe, ErrQueueUnavailable)
	require.ErrorIs(t, r[0].probe, context.DeadlineExceeded)
	t.Logf("the probe during the classic queue's outage: %v", r[0].probe)
	for _, s := range r[1:] {
		assert.Zero(t, s.failed, "stage %s: calls failed: %v", s.name, s.errs)
	}
}

// With one URL each, a side whose node stops waits for that node: calls
// wait, and fail only with their deadline.
func TestClusterQuorumOneURL(t *testing.T) {
	r := runClusterStops(t, QuorumQueue, true, "queue", "server", "client")
	assert.Zero(t, r[0].failed, "stage %s: calls failed: %v", r[0].name, r[0].errs)
}

// A fanout server whose own queue's node stops declares a new queue on the
// node it reconnects to, and gets broadcasts again while that node is
// still down.
func TestClusterFanoutServerQueueMoves(t *testing.T) {
	brokertest.Need(t)
	urls := strings.TrimSpace(clusterSh(t, "start", "urls"))
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "cluster_" + hex.EncodeToString(b)
	t.Cleanup(func() { brokertest.DeleteNamespace(strings.Split(urls, ",")[0], ns) })
	fanout := link.Fanout().(Option)
	srv, err := NewServer(urls, ns, newRPCServer(t, new(Echo)), fanout)
	require.NoError(t, err)
	brokertest.Serve(t, srv.Serve, srv.Close)
	c, err := Dial(urls, ns, fanout)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, c.Close()) })
	broadcast := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		got, err := c.callAll(ctx, "Echo.Say", "hi", func() any { return new(string) }, 1)
		if err == nil && (len(got) != 1 || got[0].Err != nil) {
			err = fmt.Errorf("results %+v", got)
		}
		return err
	}
	require.NoError(t, broadcast())

	node := queueNode(t, "rpc_"+ns+"_fanout_")
	stopped := time.Now()
	clusterSh(t, fmt.Sprint("stop-node ", node))
	defer clusterSh(t, fmt.Sprint("start-node ", node))
	var err2 error
	for time.Since(stopped) < clusterOutage {
		if err2 = broadcast(); err2 == nil {
			break
		}
	}
	require.NoError(t, err2, "no broadcast answered while node %d was down", node)
	t.Logf("cluster fanout: the server's queue's node %d stopped; a broadcast was answered %.1f s later, the node still down",
		node, time.Since(stopped).Seconds())
}

// clusterStage is what the callers saw while one node was stopped and
// started again.
type clusterStage struct {
	name   string // whose node was stopped
	probe  error  // of a call made while the node was down: the callers' deadline (quorum, every URL), else 5 s
	node   int
	shared string // the other roles on that node
	ok     atomic.Int64
	failed int64
	errs   map[string]int
	twice  int           // calls whose handler ran more than once
	gap    time.Duration // longest time without a successful call
	firstJ [clusterCallers]int64
}

// clusterLoad keeps 16 callers calling Ledger.Record through c and counts
// what they see, per stage.
type clusterLoad struct {
	stage atomic.Pointer[clusterStage]
	nextJ [clusterCallers]atomic.Int64

	mu      sync.Mutex
	lastOK  time.Time
	gapFrom time.Time // the stage's start: gaps are measured from here
	errs    map[string]int
	failed  int64
}

func (l *clusterLoad) call(c *Client, g, j int) error {
	l.nextJ[g].Store(int64(j) + 1)
	// A call counts in the stage it was made in: one made while the
	// classic queue's node was down may end (at its deadline, up to 30 s
	// later) only in the next stage, which must not be blamed for it.
	s := l.stage.Load()
	err := recordCall(c, g, j)
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil {
		s.ok.Add(1)
		from := l.lastOK
		if from.Before(l.gapFrom) {
			from = l.gapFrom
		}
		if d := now.Sub(from); d > s.gap {
			s.gap = d
		}
		if now.After(l.lastOK) {
			l.lastOK = now
		}
		return nil
	}
	kind := "other: " + err.Error()
	switch {
	case errors.Is(err, ErrQueueUnavailable):
		kind = "ErrQueueUnavailable"
	case errors.Is(err, context.DeadlineExceeded):
		kind = "context.DeadlineExceeded"
	case errors.Is(err, ErrNoRoute):
		kind = "ErrNoRoute"
	}
	s.failed++
	s.errs[kind]++
	time.Sleep(50 * time.Millisecond) // no spinning on fast failures
	return err
}

// runClusterStops serves Ledger on a cluster namespace with request
// queues of type qt, calls it from 16 callers, stops the node of each of
// roles in turn ("queue", "server", "client"), and returns the stages.
func runClusterStops(t *testing.T, qt QueueType, oneURL bool, roles ...string) []*clusterStage {
	brokertest.Need(t)
	urls := strings.Split(strings.TrimSpace(clusterSh(t, "start", "urls")), ",")
	require.Len(t, urls, 3)
	serverURL, clientURL := strings.Join(urls, ","), strings.Join(urls, ",")
	if oneURL {
		serverURL, clientURL = urls[0], urls[1]
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	ns := "cluster_" + hex.EncodeToString(b)
	t.Cleanup(func() { brokertest.DeleteNamespace(urls[0], ns) })

	ledger := new(Ledger)
	srv, err := NewServer(serverURL, ns, newRPCServer(t, ledger, new(Echo)), WithQueueType(qt))
	require.NoError(t, err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	c, err := Dial(clientURL, ns, WithQueueType(qt))
	require.NoError(t, err)

	load := &clusterLoad{}
	warmUp := &clusterStage{name: "warm-up", errs: map[string]int{}}
	load.stage.Store(warmUp)
	load.gapFrom = time.Now()
	stopLoad := runLoad(clusterCallers, func(g, j int) error { return load.call(c, g, j) })
	var once sync.Once
	stop := func() { once.Do(func() { stopLoad() }) }
	t.Cleanup(func() { stop(); _ = c.Close(); _ = srv.Close() }) // if the test fails early
	time.Sleep(3 * time.Second)

	requestQueue, replyQueue := "rpc_"+ns+"_request", "rpc_"+ns+"_"+c.ID()+"_response"
	var stages []*clusterStage
	for _, role := range roles {
		nodes := map[string]int{
			"queue":  queueNode(t, requestQueue),
			"server": consumerNode(t, requestQueue),
			"client": consumerNode(t, replyQueue),
		}
		s := &clusterStage{name: role, node: nodes[role], errs: map[string]int{}}
		var shared []string
		for _, other := range []string{"queue", "server", "client"} {
			if other != role && nodes[other] == s.node {
				shared = append(shared, other)
			}
		}
		s.shared = strings.Join(shared, "+")
		for g := range s.firstJ {
			s.firstJ[g] = load.nextJ[g].Load()
		}
		load.mu.Lock()
		load.gapFrom = time.Now()
		load.stage.Store(s)
		load.mu.Unlock()
		stopped := time.Now()
		clusterSh(t, fmt.Sprint("stop-node ", s.node))
		// A classic queue's calls, and with one URL the stopped side's,
		// wait until the node is back: the probe shows how they end, and
		// must not stretch the outage. A quorum queue with every URL
		// answers within the callers' deadline.
		probeDeadline := 5 * time.Second
		if qt == QuorumQueue && !oneURL {
			probeDeadline = clusterDeadline
		}
		probe, cancel := context.WithTimeout(context.Background(), probeDeadline)
		s.probe = c.CallContext(probe, "Echo.Say", "probe", new(string))
		cancel()
		time.Sleep(clusterOutage - time.Since(stopped))
		clusterSh(t, fmt.Sprint("start-node ", s.node))
		back := time.Now()
		// Settled: a success 3 s after the node is back. A minute
		// without one is a wedge.
		for {
			time.Sleep(time.Second)
			load.mu.Lock()
			last := load.lastOK
			load.mu.Unlock()
			if last.After(back) && time.Since(back) > 3*time.Second {
				break
			}
			require.Less(t, time.Since(last), time.Minute, "stage %s: no successful call for a minute: wedged", role)
		}
		stages = append(stages, s)
	}
	load.mu.Lock()
	load.stage.Store(&clusterStage{name: "end", errs: map[string]int{}})
	load.mu.Unlock()
	stop()
	require.NoError(t, c.Close())
	require.NoError(t, srv.Close())
	require.NoError(t, <-served)

	counts := ledger.counts()
	for id, n := range counts {
		if n < 2 {
			continue
		}
		var g int
		var j int64
		_, err := fmt.Sscanf(id, "%d-%d", &g, &j)
		require.NoError(t, err)
		for i := len(stages) - 1; i >= 0; i-- {
			if j >= stages[i].firstJ[g] {
				stages[i].twice++
				break
			}
		}
	}
	for _, s := range stages {
		on := ""
		if s.shared != "" {
			on = " (with the " + s.shared + ")"
		}
		t.Logf("cluster %s %s: stopped the %s's node %d%s for %v: %d calls answered, %d failed %v, %d handlers ran twice, longest gap %.1f s",
			qt, map[bool]string{true: "one URL", false: "3 URLs"}[oneURL], s.name, s.node, on, clusterOutage,
			s.ok.Load(), s.failed, s.errs, s.twice, s.gap.Seconds())
		// Whatever the queue type: never the misleading ErrNoRoute, never
		// a failure of another kind, and handlers run twice only for
		// requests in flight when the node stopped.
		for kind := range s.errs {
			assert.Contains(t, []string{"ErrQueueUnavailable", "context.DeadlineExceeded"}, kind, "stage %s", s.name)
		}
		assert.LessOrEqual(t, s.twice, clusterCallers, "stage %s: handlers ran twice", s.name)
	}
	return stages
}

// clusterSh runs scripts/cluster.sh with each of cmds as its arguments
// (split at spaces), in turn, and returns the last one's output.
func clusterSh(t *testing.T, cmds ...string) string {
	t.Helper()
	var out []byte
	for _, cmd := range cmds {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		var err error
		out, err = exec.CommandContext(ctx, "bash", append([]string{"scripts/cluster.sh"}, strings.Fields(cmd)...)...).Output()
		cancel()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		require.NoError(t, err, "scripts/cluster.sh %s", cmd)
	}
	return string(out)
}

// clusterCtl runs rabbitmqctl on the first node that answers.
func clusterCtl(t *testing.T, args ...string) string {
	t.Helper()
	for n := 1; n <= 3; n++ {
		out, err := exec.Command("bash", append([]string{"scripts/cluster.sh", "ctl", fmt.Sprint(n)}, args...)...).Output()
		if err == nil {
			return string(out)
		}
	}
	t.Fatalf("rabbitmqctl %v: no node answered", args)
	return ""
}

var clusterNodeRe = regexp.MustCompile(`rabbit-c([123])@localhost`)

// nodeIn is the cluster node named first in s, 0 if none.
func nodeIn(s string) int {
	if m := clusterNodeRe.FindStringSubmatch(s); m != nil {
		return int(m[1][0] - '0')
	}
	return 0
}

// queueNode is the node of the queue whose name starts with prefix: a
// quorum queue's leader, a classic queue's home.
func queueNode(t *testing.T, prefix string) int {
	t.Helper()
	return eventuallyNode(t, "queue "+prefix, func() int {
		for _, line := range strings.Split(clusterCtl(t, "list_queues", "-q", "--no-table-headers", "name", "leader", "pid"), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[0], prefix) {
				if n := nodeIn(line); n != 0 {
					return n
				}
			}
		}
		return 0
	})
}

// consumerNode is the node of the channel consuming the queue whose name
// starts with prefix (a reply queue may have moved to prefix.N).
func consumerNode(t *testing.T, prefix string) int {
	t.Helper()
	return eventuallyNode(t, "consumer of "+prefix, func() int {
		for _, line := range strings.Split(clusterCtl(t, "list_consumers", "-q", "--no-table-headers", "queue_name", "channel_pid"), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[0], prefix) {
				if n := nodeIn(f[1]); n != 0 {
					return n
				}
			}
		}
		return 0
	})
}

// eventuallyNode returns what find finds, asking again for up to 30 s: a
// node that just came back may not be listed at once, and a side that
// just reconnected may not consume yet.
func eventuallyNode(t *testing.T, what string, find func() int) int {
	t.Helper()
	for start := time.Now(); time.Since(start) < 30*time.Second; time.Sleep(500 * time.Millisecond) {
		if n := find(); n != 0 {
			return n
		}
	}
	t.Fatalf("no node for %s", what)
	return 0
}
