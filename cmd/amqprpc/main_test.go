package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

// bin is the amqprpc command, built once for the tests: they run it as a
// user would.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "amqprpc-cmd")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "amqprpc")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the command: %v\n%s", err, out)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	brokertest.Main(m)
}

type result struct {
	stdout, stderr string
	code           int
}

// runCmd runs the command with args (stdin, if given, as its input) and
// returns what it printed and its exit code.
func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "AMQP_URL="+brokertest.URL())
	c.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	c.Stdout, c.Stderr = &out, &errOut
	err := c.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return result{out.String(), errOut.String(), code}
}

// started is a command running in the background.
type started struct {
	cmd     *exec.Cmd
	out     *brokertest.Buffer
	exited  chan struct{}
	checked bool // interrupt checked its exit code
}

// start runs the command with args in the background until it printed
// ready; the test's end interrupts it (Ctrl-C) and checks it exits 0.
func start(t *testing.T, ready string, args ...string) *started {
	t.Helper()
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "AMQP_URL="+brokertest.URL())
	s := &started{cmd: c, out: &brokertest.Buffer{}, exited: make(chan struct{})}
	c.Stdout, c.Stderr = s.out, s.out
	require.NoError(t, c.Start())
	go func() { _ = c.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		if !s.checked {
			s.interrupt(t, 0)
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(s.out.String(), ready) }, 30*time.Second, 20*time.Millisecond,
		"%v never printed %q: %s", args, ready, s.out)
	return s
}

// interrupt sends Ctrl-C (SIGINT) and checks the exit code.
func (s *started) interrupt(t *testing.T, want int) {
	t.Helper()
	select {
	case <-s.exited:
	default:
		require.NoError(t, s.cmd.Process.Signal(syscall.SIGINT))
		select {
		case <-s.exited:
		case <-time.After(20 * time.Second):
			_ = s.cmd.Process.Kill()
			t.Fatalf("%v did not stop on Ctrl-C: %s", s.cmd.Args, s.out)
		}
	}
	s.checked = true
	assert.Equal(t, want, s.cmd.ProcessState.ExitCode(), "%v: %s", s.cmd.Args, s.out)
}

func TestCall(t *testing.T) {
	ns := brokertest.Namespace(t)
	server := start(t, "serving Echo", "serve-echo", ns)

	args := `{"list":[1,2.5,"x",null],"nested":{"ok":true}}`
	want := "{\n  \"list\": [\n    1,\n    2.5,\n    \"x\",\n    null\n  ],\n  \"nested\": {\n    \"ok\": true\n  }\n}\n"
	for _, cd := range []string{"msgpack", "json"} {
		r := runCmd(t, "", "call", "--codec", cd, ns, "Echo.Echo", args)
		assert.Equal(t, 0, r.code, "%s: %s", cd, r.stderr)
		assert.Equal(t, want, r.stdout, cd)
	}
	file := filepath.Join(t.TempDir(), "args.json")
	require.NoError(t, os.WriteFile(file, []byte(args), 0o600))
	r := runCmd(t, "", "call", ns, "Echo.Echo", "@"+file)
	assert.Equal(t, want, r.stdout, "args from a file")
	r = runCmd(t, args, "call", ns, "Echo.Echo", "-")
	assert.Equal(t, want, r.stdout, "args from standard input")

	t.Run("remote error", func(t *testing.T) {
		r := runCmd(t, "", "call", ns, "Echo.Fail", `"boom"`)
		assert.Equal(t, 1, r.code)
		assert.Empty(t, r.stdout)
		assert.Equal(t, "amqprpc: boom\n", r.stderr)
		r = runCmd(t, "", "call", ns, "Echo.Nothing", `1`)
		assert.Equal(t, 1, r.code)
		assert.Contains(t, r.stderr, "rpc: can't find method Echo.Nothing")
	})
	t.Run("timeout", func(t *testing.T) {
		r := runCmd(t, "", "call", "--timeout", "300ms", ns, "Echo.Sleep", "2000")
		assert.Equal(t, 3, r.code, r.stderr)
		assert.Contains(t, r.stderr, "no reply in time")
	})
	t.Run("no route", func(t *testing.T) {
		r := runCmd(t, "", "call", "--to", "nobody", ns, "Echo.Echo", "1")
		assert.Equal(t, 4, r.code, r.stderr)
		assert.Contains(t, r.stderr, `no queue bound for routing key "nobody"`)
	})
	t.Run("broker unreachable", func(t *testing.T) {
		r := runCmd(t, "", "call", "--url", "amqp://guest:secret@127.0.0.1:1/", ns, "Echo.Echo", "1")
		assert.Equal(t, 5, r.code, r.stderr)
		assert.NotContains(t, r.stderr, "secret", "passwords are never printed")
	})
	t.Run("usage", func(t *testing.T) {
		assert.Equal(t, 2, runCmd(t, "", "call", ns, "Echo.Echo").code, "missing args")
		assert.Equal(t, 2, runCmd(t, "", "call", ns, "Echo.Echo", "{not json").code)
		assert.Equal(t, 2, runCmd(t, "", "call", "--codec", "xml", ns, "Echo.Echo", "1").code)
		assert.Equal(t, 2, runCmd(t, "", "call", "--bogus", ns, "Echo.Echo", "1").code)
	})
	t.Run("Ctrl-C", func(t *testing.T) {
		call := start(t, "", "call", ns, "Echo.Sleep", "5000")
		time.Sleep(500 * time.Millisecond) // the call is sent
		call.interrupt(t, 130)
		assert.Contains(t, call.out.String(), "interrupted")
	})
	server.interrupt(t, 0)
	assert.Contains(t, server.out.String(), "stopped", "serve-echo ends cleanly on Ctrl-C")
}

func TestCallAll(t *testing.T) {
	ns := brokertest.Namespace(t)
	for range 3 {
		start(t, "serving Echo", "serve-echo", "--fanout", ns)
	}
	r := runCmd(t, "", "call", "--all", "--want", "3", ns, "Echo.Echo", `{"hi":1}`)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Equal(t, "{\"hi\":1}\n{\"hi\":1}\n{\"hi\":1}\n", r.stdout, "one line per server")
	assert.Contains(t, r.stderr, "3 replies, 0 of them errors")

	r = runCmd(t, "", "call", "--all", "--timeout", "1s", ns, "Echo.Fail", `"no"`)
	assert.Equal(t, 1, r.code)
	assert.Equal(t, "error: no\nerror: no\nerror: no\n", r.stdout)

	// Fewer replies than wanted, or none, within --timeout: a timeout, not
	// an interruption.
	r = runCmd(t, "", "call", "--all", "--want", "4", "--timeout", "1s", ns, "Echo.Echo", `1`)
	assert.Equal(t, 3, r.code, r.stderr)
	assert.Equal(t, "1\n1\n1\n", r.stdout)
	assert.Contains(t, r.stderr, "3 of the 4 replies wanted came within --timeout")
	r = runCmd(t, "", "call", "--all", "--timeout", "500ms", ns, "Echo.Sleep", `3000`)
	assert.Equal(t, 3, r.code, r.stderr)

	// A fanout namespace called as a direct one: the broker refuses the
	// declarations, which is not "unreachable".
	r = runCmd(t, "", "call", ns, "Echo.Echo", `1`)
	assert.Equal(t, 6, r.code, r.stderr)
	assert.Contains(t, r.stderr, "namespace conflict")
	assert.Contains(t, r.stderr, "call --all")
}

func TestPing(t *testing.T) {
	ns := brokertest.Namespace(t)
	start(t, "serving Echo", "serve-echo", ns)
	r := runCmd(t, "", "ping", ns, "-n", "200", "-c", "4", "--size", "100")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "200 answered, 0 failed")
	assert.Regexp(t, `round trip: min [0-9.]+ ms  p50 [0-9.]+ ms  p90 [0-9.]+ ms  p99 [0-9.]+ ms  max [0-9.]+ ms`, r.stdout)

	r = runCmd(t, "", "ping", "--timeout", "500ms", brokertest.Namespace(t), "-n", "1")
	assert.Equal(t, 3, r.code, "no server: the ping times out: %s %s", r.stdout, r.stderr)
}

func TestStatus(t *testing.T) {
	ns := brokertest.Namespace(t)
	start(t, "serving Echo", "serve-echo", ns)
	require.Equal(t, 0, runCmd(t, "", "call", ns, "Echo.Echo", "1").code) // a client's reply queue

	// The management API refreshes its figures every 5 s.
	var report statusReport
	require.Eventually(t, func() bool {
		r := runCmd(t, "", "status", "--json", ns)
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &report) != nil || len(report.Namespaces) != 1 {
			return false
		}
		rq := report.Namespaces[0].RequestQueue
		return rq != nil && rq.Consumers == 1 && len(report.Namespaces[0].ReplyQueues) >= 1
	}, 30*time.Second, time.Second, "status --json: %+v", report)
	assert.Equal(t, "management", report.Source)
	assert.Equal(t, "rpc_"+ns+"_request", report.Namespaces[0].RequestQueue.Name)

	r := runCmd(t, "", "status", ns)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Regexp(t, ns+`\s+rpc_`+ns+`_request\s+requests\s+classic\s+0\s+0\s+1`, r.stdout)
	assert.Contains(t, r.stdout, ns+": 1 server(s) consuming")

	r = runCmd(t, "", "status", "--mgmt", "http://127.0.0.1:1/", ns)
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stdout, "note: the management API is not reachable at http://guest:xxxxx@127.0.0.1:1/")
	assert.Regexp(t, ns+`\s+rpc_`+ns+`_request\s+requests\s+-\s+0\s+-\s+1`, r.stdout, "what AMQP tells")
	r = runCmd(t, "", "status", "--mgmt", "http://127.0.0.1:1/")
	assert.Equal(t, 2, r.code, "without the management API, namespaces must be named")
}

// --help shows no password, whatever AMQP_URL holds.
func TestHelpHidesPasswords(t *testing.T) {
	c := exec.Command(bin, "call", "--help")
	c.Env = append(os.Environ(), "AMQP_URL=amqp://bob:s3cret@127.0.0.1:5672/")
	out, err := c.CombinedOutput()
	require.NoError(t, err)
	assert.NotContains(t, string(out), "s3cret")
	assert.Contains(t, string(out), "--url string")
}

func TestVersion(t *testing.T) {
	r := runCmd(t, "", "version")
	require.Equal(t, 0, r.code)
	assert.Regexp(t, `^amqprpc \S+ \(library \S+.*go1\.`, r.stdout)
}

// A broker URL that does not parse is refused without quoting its password,
// whichever command reads it (net/url's errors quote the whole URL).
func TestBadURLHidesPassword(t *testing.T) {
	for _, args := range [][]string{
		{"ping", "arith"},
		{"call", "arith", "Arith.Add", `{"A":1,"B":2}`},
		{"status", "arith"},
		{"status", "--mgmt", "", "arith"},
	} {
		for _, u := range []string{"amqp://bob:s3cret@127.0.0.1:bad/", "amqp://bob:s3cret%zz@127.0.0.1/", "amqp://bob:pw/s3cret@127.0.0.1/"} {
			r := runCmd(t, "", append(args, "--url", u)...)
			assert.NotZero(t, r.code, "%v %s", args, u)
			assert.NotContains(t, r.stdout+r.stderr, "s3cret", "%v %s", args, u)
		}
	}
	// The management API's URL, the other URL the command takes.
	for _, m := range []string{"http://bob:s3cret@127.0.0.1:bad/", "ftp://bob:s3cret@/", "http://bob:s3cret%zz@127.0.0.1:15672/"} {
		r := runCmd(t, "", "status", "--mgmt", m, "arith")
		assert.NotZero(t, r.code, m)
		assert.NotContains(t, r.stdout+r.stderr, "s3cret", m)
	}
}
