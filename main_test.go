package amqprpc

import (
	"os"
	"testing"

	"github.com/amqprpc/amqprpc/internal/brokertest"
)

func TestMain(m *testing.M) {
	if ns := os.Getenv(childServerEnv); ns != "" {
		runChildServer(ns) // a server process for TestServerKilledMidCall
		return
	}
	brokertest.Main(m)
}
