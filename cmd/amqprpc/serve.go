package main

import (
	"errors"
	"fmt"
	"net/rpc"
	"time"

	"github.com/spf13/cobra"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/fanout"
)

// Echo is serve-echo's service.
type Echo struct{}

// Echo answers its args.
func (Echo) Echo(args any, reply *any) error {
	*reply = args
	return nil
}

// Fail answers an error whose text is its args, printed.
func (Echo) Fail(args any, _ *any) error { return errors.New(fmt.Sprint(args)) }

// Sleep waits ms milliseconds, then answers ms.
func (Echo) Sleep(ms int, reply *int) error {
	time.Sleep(time.Duration(ms) * time.Millisecond)
	*reply = ms
	return nil
}

func newServeEchoCmd(g *globals) *cobra.Command {
	var fan bool
	cmd := &cobra.Command{
		Use:   "serve-echo [flags] NAMESPACE",
		Short: "Serve a tiny Echo service, for trying the other subcommands",
		Long: `serve-echo serves the service Echo in NAMESPACE until interrupted:

  Echo.Echo   ARGS -> ARGS
  Echo.Fail   ARGS -> an error whose text is ARGS
  Echo.Sleep  MS   -> MS, after sleeping MS milliseconds

and, as every amqprpc server, amqprpc.Ping. With --fanout it serves a fanout
namespace, where every server gets every call (try call --all).`,
		Example: `  amqprpc serve-echo demo &
  amqprpc call demo Echo.Echo '{"hello":"world"}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			services := rpc.NewServer()
			if err := services.Register(Echo{}); err != nil {
				return exit(exitLocal, err)
			}
			ns := args[0]
			var serve func() error
			var closeServer func() error
			if fan {
				s, err := fanout.NewServer(g.url, ns, services)
				if err != nil {
					return dialError(g.url, err)
				}
				serve, closeServer = func() error { return s.Serve(cmd.Context()) }, s.Close
			} else {
				s, err := amqprpc.NewServer(g.url, ns, services)
				if err != nil {
					return dialError(g.url, err)
				}
				serve, closeServer = func() error { return s.Serve(cmd.Context()) }, s.Close
			}
			kind := ""
			if fan {
				kind = " (fanout)"
			}
			fmt.Fprintf(g.stdout, "serving Echo in %s%s via %s; Ctrl-C stops\n", ns, kind, redact(g.url))
			err := serve() // until Ctrl-C: it then lets running calls finish
			if cerr := closeServer(); err == nil {
				err = cerr
			}
			if err != nil {
				return exit(exitLocal, err)
			}
			fmt.Fprintln(g.stdout, "stopped")
			return nil
		},
	}
	cmd.Flags().BoolVar(&fan, "fanout", false, "serve a fanout namespace")
	return cmd
}
