// Command amqprpc calls, serves and watches amqprpc namespaces from a
// terminal: what grpcurl is to gRPC.
//
//	amqprpc call math Math.SumNumbers '[1,2,3]'
//	amqprpc ping math -n 1000 -c 8
//	amqprpc status math
//	amqprpc serve-echo demo
//
// The broker URL comes from --url, or AMQP_URL, or is the local default
// (amqp://guest:guest@127.0.0.1:5672/); several comma-separated URLs name
// a cluster's nodes. Passwords are never printed. Ctrl-C ends any
// subcommand cleanly. "amqprpc completion bash" (or zsh, fish,
// powershell) prints a shell completion script.
//
// It is a module of its own, so that its dependencies (cobra, a progress
// bar) do not enter the library's go.mod.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/amqprpc/amqprpc"
)

// Exit codes, as documented in the root command's help.
const (
	exitOK          = 0
	exitRemote      = 1 // the server answered with an error
	exitUsage       = 2 // bad flags or arguments
	exitTimeout     = 3 // no reply before --timeout
	exitNoRoute     = 4 // no queue for the call, or its queue unavailable
	exitUnreachable = 5 // the broker cannot be reached
	exitLocal       = 6 // another failure of the client's own
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes:
  0    success
  1    the server answered with an error (printed on standard error)
  2    bad flags or arguments
  3    timeout: no reply within --timeout
  4    no route: no queue takes the call (ErrNoRoute), or its queue is unavailable
  5    the broker cannot be reached
  6    another failure of the client's own (refused by the broker, unreadable reply, ...)
  130  interrupted (Ctrl-C) during a call or a ping; Ctrl-C ends
       serve-echo and status --watch with 0`

// exitError is an error that ends the command with its own exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit code %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func exit(code int, err error) error { return &exitError{code: code, err: err} }

// dialError is the exit of a Dial or NewServer that failed: the broker
// could not be reached (5), or it refused the namespace's declarations, as
// when a direct namespace is used as a fanout one or the other way round
// (6).
func dialError(url string, err error) error {
	if errors.Is(err, amqprpc.ErrNamespaceConflict) {
		return exit(exitLocal, fmt.Errorf("%w (a fanout namespace takes call --all; ping and call need a direct one)", err))
	}
	return exit(exitUnreachable, fmt.Errorf("connecting to %s: %w", redact(url), err))
}

// globals are the flags every subcommand has.
type globals struct {
	url    string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func defaultURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "amqprpc",
		Short: "Call, serve and watch amqprpc namespaces",
		Long: `amqprpc calls, serves and watches the namespaces of amqprpc, net/rpc over RabbitMQ.

The broker URL comes from --url, or AMQP_URL, or is the local default; a
cluster's nodes may be given as one comma-separated URL. Passwords are
never printed.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// The default is resolved when the command runs, so that --help never
	// prints a password from AMQP_URL.
	root.PersistentFlags().StringVar(&g.url, "url", "", "broker URL (default: AMQP_URL, or amqp://guest:guest@127.0.0.1:5672/)")
	root.PersistentPreRun = func(*cobra.Command, []string) {
		if g.url == "" {
			g.url = defaultURL()
		}
	}
	root.SetIn(g.stdin)
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return exit(exitUsage, err) })
	root.AddCommand(newCallCmd(g), newPingCmd(g), newStatusCmd(g), newServeEchoCmd(g), newVersionCmd(g))
	return root
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: exitUsage, err: err} // cobra's own: unknown command, wrong arguments
	}
	if ee.code == exitInterrupted {
		fmt.Fprintln(stderr, "amqprpc: interrupted")
	} else if ee.err != nil {
		text := ee.err.Error()
		if !strings.HasPrefix(text, "amqprpc: ") { // the library's errors say it already
			text = "amqprpc: " + text
		}
		fmt.Fprintln(stderr, paint(stderr, red, text))
	}
	return ee.code
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
