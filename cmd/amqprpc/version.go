package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of the command and of the amqprpc library it was built with",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cmd, lib := "(unknown)", "(unknown)"
			if bi, ok := debug.ReadBuildInfo(); ok {
				cmd = bi.Main.Version
				for _, d := range bi.Deps {
					if d.Path == "github.com/amqprpc/amqprpc" {
						lib = d.Version
						if d.Replace != nil {
							lib += " => " + d.Replace.Path
						}
					}
				}
			}
			fmt.Fprintf(g.stdout, "amqprpc %s (library %s, %s %s/%s)\n", cmd, lib, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}
