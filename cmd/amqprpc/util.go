package main

import (
	"io"
	"os"
	"strings"

	"github.com/mattn/go-isatty"

	"github.com/amqprpc/amqprpc/internal/transport"
)

// redact returns url, one URL or a cluster's comma-separated ones, with
// every password replaced.
func redact(url string) string {
	parts := strings.Split(url, ",")
	for i, p := range parts {
		parts[i] = transport.Redact(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// terminal reports whether w is a terminal (not a pipe or a file).
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

const (
	red   = "31"
	green = "32"
	bold  = "1"
)

// paint wraps text in an ANSI colour when w is a terminal and NO_COLOR
// (https://no-color.org) is not set; otherwise it returns text as it is.
func paint(w io.Writer, color, text string) string {
	if !terminal(w) || os.Getenv("NO_COLOR") != "" {
		return text
	}
	return "\x1b[" + color + "m" + text + "\x1b[0m"
}
