// Command client is the tutorial's RPC client: synchronous calls, a remote
// error and deferred calls against the "math" namespace.
package main

import (
	"fmt"
	"log"
	"net/rpc"
	"os"
	"time"

	"github.com/amqprpc/amqprpc"
	"github.com/amqprpc/amqprpc/examples/tutorial/mathsvc"
)

func main() {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	client, err := amqprpc.Dial(url, "math")
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	// No sleep: Dial returns once the queues exist.

	var sum float64
	if err := client.Call("Math.SumNumbers", []float64{1, 2, 3, 4}, &sum); err != nil {
		log.Fatal(err)
	}
	fmt.Println("Math.SumNumbers(1, 2, 3, 4) =", sum)

	var h float64
	if err := client.Call("Math.Hypotenuse", mathsvc.Cathetuses{A: 3, B: 4}, &h); err != nil {
		log.Fatal(err)
	}
	fmt.Println("Math.Hypotenuse(3, 4) =", h)

	// Remote errors: the handler's error, and args that do not fit.
	err = client.Call("Math.Hypotenuse", mathsvc.Cathetuses{A: -3, B: 4}, &h)
	fmt.Printf("Math.Hypotenuse(-3, 4) failed remotely: %T: %v\n", err, err)
	err = client.Call("Math.Hypotenuse", []string{"foo", "bar"}, &h)
	fmt.Printf("Math.Hypotenuse(\"foo\", \"bar\") failed remotely: %T: %v\n", err, err)

	// Deferred calls: all four run at once on the servers.
	start := time.Now()
	calls := make([]*rpc.Call, 4)
	squares := make([]float64, 4)
	for i := range calls {
		calls[i] = client.Go("Math.SlowSquare", float64(i+1), &squares[i], nil)
	}
	fmt.Println("4 deferred calls of Math.SlowSquare (300 ms each) sent; doing other work...")
	for i, call := range calls {
		<-call.Done
		if call.Error != nil {
			log.Fatal(call.Error)
		}
		fmt.Printf("Math.SlowSquare(%d) = %v\n", i+1, squares[i])
	}
	fmt.Printf("all 4 done in %v\n", time.Since(start).Round(10*time.Millisecond))
}
