// Package mathsvc is the service of amphora's tutorial, as a net/rpc
// receiver: the "math" namespace's server registers it and its client calls
// it through RabbitMQ.
package mathsvc

import (
	"fmt"
	"math"
	"time"
)

// Math does simple arithmetic remotely.
type Math struct{}

// Cathetuses are the two short sides of a right triangle.
type Cathetuses struct{ A, B float64 }

// SumNumbers sets sum to the sum of nums.
func (*Math) SumNumbers(nums []float64, sum *float64) error {
	for _, n := range nums {
		*sum += n
	}
	return nil
}

// Hypotenuse sets h to the hypotenuse of c. Negative sides are an error.
func (*Math) Hypotenuse(c Cathetuses, h *float64) error {
	if c.A < 0 || c.B < 0 {
		return fmt.Errorf("a cathetus cannot be negative: %v, %v", c.A, c.B)
	}
	*h = math.Sqrt(c.A*c.A + c.B*c.B)
	return nil
}

// SlowSquare sets sq to x*x after 300 ms: the tutorial's long-running call.
func (*Math) SlowSquare(x float64, sq *float64) error {
	time.Sleep(300 * time.Millisecond)
	*sq = x * x
	return nil
}
