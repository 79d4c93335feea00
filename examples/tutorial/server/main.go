// Command server is the tutorial's RPC server: it serves mathsvc.Math in the
// "math" namespace until interrupted. Start as many as you like.
package main

import (
	"context"
	"log"
	"net/rpc"
	"os"
	"os/signal"
	"syscall"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/examples/tutorial/mathsvc"
)

func main() {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	if err := rpc.Register(new(mathsvc.Math)); err != nil {
		log.Fatal(err)
	}
	server, err := amqprpc.NewServer(url, "math", nil) // nil: rpc.DefaultServer
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log.Printf("server %d: serving namespace math", os.Getpid())
	if err := server.Serve(ctx); err != nil {
		log.Fatal(err)
	}
	log.Printf("server %d: stopped", os.Getpid())
}
