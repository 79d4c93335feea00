package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/codec"
	"github.com/amqprpc/amqprpc/fanout"
)

func newCallCmd(g *globals) *cobra.Command {
	var (
		timeout   time.Duration
		to        string
		codecName string
		all       bool
		want      int
	)
	cmd := &cobra.Command{
		Use:   "call [flags] NAMESPACE Service.Method ARGS_JSON",
		Short: "Call a method and print its reply as JSON",
		Long: `call calls Service.Method in NAMESPACE with ARGS_JSON and prints the reply as
indented JSON on standard output. ARGS_JSON is a JSON value, @FILE for one
read from a file, or - for one read from standard input. A remote error (the
handler's, an unknown method) goes to standard error with exit code 1.

With --all on a fanout namespace, every server answers (CallAll): one line
per reply, until --want replies came or --timeout ended the wait.

` + exitCodesHelp,
		Example: `  amqprpc call math Math.SumNumbers '[1,2,3]'
  amqprpc call --to alice api Messages.Show '{"User":"alice","Text":"hi"}'
  amqprpc call --all --want 3 cluster Node.Status '{}'
  echo '[4,5]' | amqprpc call math Math.SumNumbers -`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, method := args[0], args[1]
			value, err := readArgs(args[2], cmd.InOrStdin())
			if err != nil {
				return exit(exitUsage, err)
			}
			cd, err := parseCodec(codecName)
			if err != nil {
				return exit(exitUsage, err)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			opts := []amqprpc.Option{amqprpc.WithCodec(cd), amqprpc.WithCallTimeout(timeout), cliReplyQueue}
			if all {
				if to != "" {
					return exit(exitUsage, errors.New("--to and --all: a broadcast has no routing key"))
				}
				return callAll(cmd.Context(), ctx, g, ns, method, value, want, opts)
			}
			client, err := amqprpc.Dial(g.url, ns, opts...)
			if err != nil {
				return dialError(g.url, err)
			}
			defer client.Close()
			var call any = value
			if to != "" {
				call = amqprpc.To(to, value)
			}
			var reply any
			if err := client.CallContext(ctx, method, call, &reply); err != nil {
				return callError(cmd.Context(), err)
			}
			return printJSON(g.stdout, reply, true)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the reply (or replies, with --all)")
	f.StringVar(&to, "to", "", "routing key: send the call to this request queue (see CreateRequestQueue)")
	f.StringVar(&codecName, "codec", "msgpack", "body encoding of the request: json or msgpack")
	f.BoolVar(&all, "all", false, "broadcast to every server of a fanout namespace (CallAll)")
	f.IntVar(&want, "want", 0, "with --all: stop after this many replies (0: wait for --timeout)")
	_ = cmd.RegisterFlagCompletionFunc("codec", cobra.FixedCompletions([]string{"json", "msgpack"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// callAll broadcasts method and prints one line per reply, until want
// replies came or ctx (the timeout, within parent) ended; fewer than want
// is a timeout (exit 3), after the lines of those that came.
func callAll(parent, ctx context.Context, g *globals, ns, method string, value any, want int, opts []amqprpc.Option) error {
	client, err := fanout.Dial(g.url, ns, opts...)
	if err != nil {
		return dialError(g.url, err)
	}
	defer client.Close()
	results, err := client.CallAll(ctx, method, value, func() any { return new(any) }, want)
	if err != nil && len(results) == 0 {
		return callError(parent, err)
	}
	failed := 0
	for _, r := range results {
		if r.Err != nil {
			failed++
			fmt.Fprintln(g.stdout, paint(g.stdout, red, "error: "+r.Err.Error()))
			continue
		}
		if err := printJSON(g.stdout, *(r.Reply.(*any)), false); err != nil {
			return err
		}
	}
	fmt.Fprintf(g.stderr, "%d replies, %d of them errors\n", len(results), failed)
	switch {
	case parent.Err() != nil:
		return exit(exitInterrupted, nil)
	case want > 0 && len(results) < want:
		return exit(exitTimeout, fmt.Errorf("%d of the %d replies wanted came within --timeout", len(results), want))
	case failed > 0:
		return exit(exitRemote, nil)
	}
	return nil
}

// callError maps a call's error to its exit code. parent is the command's
// context: its end is Ctrl-C, not a timeout.
func callError(parent context.Context, err error) error {
	var se rpc.ServerError
	switch {
	case parent.Err() != nil:
		return exit(exitInterrupted, err)
	case errors.As(err, &se):
		return exit(exitRemote, errors.New(string(se)))
	case errors.Is(err, amqprpc.ErrNoRoute), errors.Is(err, amqprpc.ErrQueueUnavailable):
		return exit(exitNoRoute, err)
	case errors.Is(err, context.DeadlineExceeded):
		return exit(exitTimeout, fmt.Errorf("no reply in time: %w", err))
	}
	return exit(exitLocal, err)
}

// cliReplyQueue makes the reply queue of a command's client expire soon
// after the command ends (the broker deletes it 10 s after its last
// consumer), not after the library's default 5 minutes: a shell session
// makes many short-lived clients.
var cliReplyQueue = amqprpc.WithReplyQueueExpiry(10 * time.Second)

func parseCodec(name string) (codec.Codec, error) {
	switch strings.ToLower(name) {
	case "msgpack":
		return codec.MsgPack, nil
	case "json":
		return codec.JSON, nil
	}
	return nil, fmt.Errorf("--codec %q: json or msgpack", name)
}

// readArgs reads the call's args: a JSON value, @FILE, or - (stdin).
func readArgs(arg string, stdin io.Reader) (any, error) {
	var data []byte
	var err error
	switch {
	case arg == "-":
		data, err = io.ReadAll(stdin)
	case strings.HasPrefix(arg, "@"):
		data, err = os.ReadFile(arg[1:])
	default:
		data = []byte(arg)
	}
	if err != nil {
		return nil, fmt.Errorf("reading args: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("args are not JSON: %w", err)
	}
	if dec.More() {
		return nil, errors.New("args are not one JSON value")
	}
	return numbers(v), nil
}

// numbers replaces the json.Numbers in v by int64 where they are whole,
// and float64 otherwise, so that msgpack encodes them as numbers that a
// Go server decodes into its int and float fields.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = numbers(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = numbers(x[k])
		}
	}
	return v
}

// printJSON prints v as JSON: indented, or on one line.
func printJSON(w io.Writer, v any, indent bool) error {
	var out []byte
	var err error
	if indent {
		out, err = json.MarshalIndent(jsonable(v), "", "  ")
	} else {
		out, err = json.Marshal(jsonable(v))
	}
	if err != nil {
		return exit(exitLocal, fmt.Errorf("printing the reply: %w", err))
	}
	_, err = fmt.Fprintln(w, string(out))
	return err
}

// jsonable makes a decoded msgpack value printable as JSON: maps with
// keys other than strings get their keys printed.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case map[string]any:
		for k, e := range x {
			x[k] = jsonable(e)
		}
	case []any:
		for i := range x {
			x[i] = jsonable(x[i])
		}
	}
	return v
}
